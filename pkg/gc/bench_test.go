package gc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/filesystem"
)

// benchStore writes a registry:2 store of n manifests directly on the
// filesystem driver: each manifest has its own config and three own layers
// and shares one of 1000 common layers, so blobs ≈ 5n. Every other
// manifest is deleted (revision link gone), so half the blobs are garbage.
//
// The files are written with os.WriteFile, bypassing the driver's fsync,
// so that setting up 50000 blobs takes seconds, not minutes.
func benchStore(b *testing.B, n int) storage.Driver {
	b.Helper()
	root := b.TempDir()
	put := func(p string, content []byte) {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(full, content, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	blob := func(repo string, content []byte) digest.Digest {
		d := digest.FromBytes(content)
		put(blobDataPath(d), content)
		put(layerLinkPath(repo, d), []byte(d))
		return d
	}
	for i := range n {
		repo := fmt.Sprintf("bench/r%d", i%100)
		cfg := blob(repo, fmt.Appendf(nil, "config %d", i))
		layers := []digest.Digest{blob(repo, fmt.Appendf(nil, "shared %d", i%1000))}
		for j := range 3 {
			layers = append(layers, blob(repo, fmt.Appendf(nil, "layer %d/%d", i, j)))
		}
		m := imageManifest(cfg, layers...)
		d := digest.FromBytes(m)
		put(blobDataPath(d), m)
		if i%2 == 0 {
			put(revisionLinkPath(repo, d), []byte(d))
			put(tagCurrentLinkPath(repo, fmt.Sprintf("t%d", i)), []byte(d))
		}
	}
	drv, err := filesystem.New(root)
	if err != nil {
		b.Fatal(err)
	}
	return drv
}

// BenchmarkCollect prints the wall time and storage calls of a dry run
// and of a deleting run. GC_BENCH_MANIFESTS sets the size (default 1000;
// the figure is 10000 manifests, about 50000 blobs).
//
//	GC_BENCH_MANIFESTS=10000 go test -run '^$' -bench Collect -benchtime 1x ./pkg/gc/
func BenchmarkCollect(b *testing.B) {
	n := 1000
	if s := os.Getenv("GC_BENCH_MANIFESTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("GC_BENCH_MANIFESTS: %v", err)
		}
		n = v
	}
	for _, dry := range []bool{true, false} {
		b.Run(map[bool]string{true: "dry-run", false: "delete"}[dry], func(b *testing.B) {
			var rep *Report
			for b.Loop() {
				b.StopTimer()
				drv := benchStore(b, n)
				r, err := NewRunner(drv, DefaultConfig(), RunnerOptions{Holder: "bench", LeaseSettle: time.Millisecond,
					Logger: discard(), Now: shiftedClock(2 * time.Hour)})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if rep, err = r.Run(context.Background(), RunOptions{DryRun: dry}); err != nil {
					b.Fatal(err)
				}
			}
			c := rep.StorageCalls
			b.ReportMetric(float64(rep.BlobsTotal), "blobs")
			b.ReportMetric(float64(len(rep.Blobs)), "swept")
			b.ReportMetric(float64(c.List+c.Stat+c.Read+c.Write+c.Delete+c.Walk), "calls")
			b.Logf("%d manifests, %d blobs, %d swept (%d bytes); phases %v; storage calls %+v", n, rep.BlobsTotal, len(rep.Blobs), rep.BytesFreed, rep.Phases, c)
		})
	}
}
