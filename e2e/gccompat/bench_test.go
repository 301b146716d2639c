package gccompat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/storage/filesystem"
)

// BenchmarkPullLatencyDuringGC serves a store of n manifests (about 5n
// blobs, half of them garbage) with an in-process origin on the filesystem
// driver, and prints the p50/p99 latency of concurrent pulls without GC
// and while a deleting GC run collects the garbage, with the run's wall
// time and storage calls. Every pull must succeed.
//
//	GC_BENCH_MANIFESTS=10000 go test -run '^$' -bench PullLatency -benchtime 1x ./e2e/gccompat/
func BenchmarkPullLatencyDuringGC(b *testing.B) {
	n := 2000
	if s := os.Getenv("GC_BENCH_MANIFESTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("GC_BENCH_MANIFESTS: %v", err)
		}
		n = v
	}
	for b.Loop() {
		b.StopTimer()
		root := b.TempDir()
		images := writeStore(b, root, n)
		drv, err := filesystem.New(root)
		if err != nil {
			b.Fatal(err)
		}
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		srv, err := origin.New(drv, origin.DefaultConfig(), quiet, nil)
		if err != nil {
			b.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		b.StartTimer()

		// Baseline first, for a fixed time.
		base := pullFor(b, ts.URL, images, func(<-chan struct{}) { time.Sleep(5 * time.Second) })

		cfg := gc.DefaultConfig()
		runner, err := gc.NewRunner(drv, cfg, gc.RunnerOptions{Holder: "bench", LeaseSettle: time.Millisecond, Logger: quiet,
			Now: func() time.Time { return time.Now().Add(time.Duration(cfg.Grace) + time.Hour) }})
		if err != nil {
			b.Fatal(err)
		}
		var rep *gc.Report
		during := pullFor(b, ts.URL, images, func(<-chan struct{}) {
			var err error
			if rep, err = runner.Run(context.Background(), gc.RunOptions{}); err != nil {
				b.Error(err)
			}
		})
		ts.Close()

		b.ReportMetric(base.p99.Seconds()*1000, "p99-ms-no-gc")
		b.ReportMetric(during.p99.Seconds()*1000, "p99-ms-gc")
		b.ReportMetric(rep.FinishedAt.Sub(rep.StartedAt).Seconds(), "gc-s")
		b.Logf("%d manifests, %d blobs: gc deleted %d blobs in %s (phases %v), storage calls %+v",
			n, rep.BlobsTotal, len(rep.Blobs), rep.FinishedAt.Sub(rep.StartedAt).Round(time.Millisecond), rep.Phases, rep.StorageCalls)
		b.Logf("pulls without gc: %d requests, p50 %s, p99 %s", base.count, base.p50, base.p99)
		b.Logf("pulls during gc:  %d requests, p50 %s, p99 %s", during.count, during.p50, during.p99)
	}
}

type latencies struct {
	count    int
	p50, p99 time.Duration
}

// pullFor pulls random kept images (manifest, then config and layers) with
// 8 clients until during returns, and returns the request latencies.
func pullFor(b *testing.B, base string, images []string, during func(stop <-chan struct{})) latencies {
	stop := make(chan struct{})
	var mu sync.Mutex
	var all []time.Duration
	var failed atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	get := func(url string) ([]byte, error) {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		mu.Lock()
		all = append(all, d)
		mu.Unlock()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return body, err
	}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				img := images[i%len(images)]
				repo, tag := filepath.Dir(img), filepath.Base(img)
				body, err := get(base + "/v2/" + repo + "/manifests/" + tag)
				if err != nil {
					b.Error(err)
					failed.Add(1)
					continue
				}
				var m ocispec.Manifest
				if err := json.Unmarshal(body, &m); err != nil {
					b.Error(err)
					continue
				}
				for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
					if _, err := get(base + "/v2/" + repo + "/blobs/" + d.Digest.String()); err != nil {
						b.Error(err)
						failed.Add(1)
					}
				}
			}
		}()
	}
	during(stop)
	close(stop)
	wg.Wait()
	if failed.Load() > 0 {
		b.Fatalf("%d pulls failed", failed.Load())
	}
	slices.Sort(all)
	if len(all) == 0 {
		return latencies{}
	}
	return latencies{count: len(all), p50: all[len(all)/2], p99: all[len(all)*99/100]}
}

// writeStore writes n manifests in registry:2's layout straight to disk:
// each with its own config and three layers plus one of 1000 shared
// layers, in 100 repositories; every other manifest is deleted (no
// revision link), so half the blobs are garbage. It returns "repo/tag" of
// the kept images.
func writeStore(b *testing.B, root string, n int) []string {
	put := func(p string, content []byte) {
		full := filepath.Join(root, "docker/registry/v2", filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(full, content, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	blobPath := func(d digest.Digest) string {
		return fmt.Sprintf("blobs/sha256/%s/%s/data", d.Encoded()[:2], d.Encoded())
	}
	blob := func(repo string, content []byte) ocispec.Descriptor {
		d := digest.FromBytes(content)
		put(blobPath(d), content)
		put(fmt.Sprintf("repositories/%s/_layers/sha256/%s/link", repo, d.Encoded()), []byte(d))
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(content))}
	}
	var kept []string
	for i := range n {
		repo := fmt.Sprintf("bench/r%d", i%100)
		cfg := blob(repo, fmt.Appendf(nil, `{"config":%d}`, i))
		cfg.MediaType = ocispec.MediaTypeImageConfig
		layers := []ocispec.Descriptor{blob(repo, fmt.Appendf(nil, "shared %d", i%1000))}
		for j := range 3 {
			layers = append(layers, blob(repo, fmt.Appendf(nil, "layer %d/%d", i, j)))
		}
		m, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: layers})
		if err != nil {
			b.Fatal(err)
		}
		d := digest.FromBytes(m)
		put(blobPath(d), m)
		if i%2 == 0 {
			tag := fmt.Sprintf("t%d", i)
			put(fmt.Sprintf("repositories/%s/_manifests/revisions/sha256/%s/link", repo, d.Encoded()), []byte(d))
			put(fmt.Sprintf("repositories/%s/_manifests/tags/%s/current/link", repo, tag), []byte(d))
			put(fmt.Sprintf("repositories/%s/_manifests/tags/%s/index/sha256/%s/link", repo, tag, d.Encoded()), []byte(d))
			kept = append(kept, repo+"/"+tag)
		}
	}
	return kept
}
