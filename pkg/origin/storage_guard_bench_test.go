package origin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/filesystem"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// BenchmarkManifestGETGuarded is the in-process half of e2e/bench's
// -against limits-off manifest figures: the handler's cost per manifest
// GET by tag (one storage call) with storageTimeout on (the default) and
// off, on in-memory storage (the guard's own cost) and on the filesystem
// (a driver that ignores its context, as e2e/bench's origin runs on), one
// request at a time and from many goroutines at once.
func BenchmarkManifestGETGuarded(b *testing.B) {
	fsd, err := filesystem.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range []storage.Driver{inmemory.New(), fsd} {
		seedRepo(openOrigin(b, d), "team/bench")
		for _, timeout := range []time.Duration{DefaultConfig().StorageTimeout, 0} {
			cfg := DefaultConfig()
			cfg.StorageTimeout = timeout
			s, err := New(d, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			if err != nil {
				b.Fatal(err)
			}
			// As net/http's, the requests' context is cancellable.
			ctx, cancel := context.WithCancel(context.Background())
			b.Cleanup(cancel)
			newRequest := func() *http.Request {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/v2/team/bench/manifests/latest", nil)
				req.Header.Set("Accept", mediaTypeOCIManifest)
				return req
			}
			get := func(b *testing.B, req *http.Request) {
				w := httptest.NewRecorder()
				s.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("GET answered %d: %s", w.Code, w.Body)
				}
			}
			name := d.Name() + "/storageTimeout=" + timeout.String()
			b.Run(name+"/serial", func(b *testing.B) {
				req := newRequest()
				b.ReportAllocs()
				defer reportCPU(b)()
				for b.Loop() {
					get(b, req)
				}
			})
			b.Run(name+"/parallel", func(b *testing.B) {
				b.ReportAllocs()
				defer reportCPU(b)()
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					req := newRequest()
					for pb.Next() {
						get(b, req)
					}
				})
			})
		}
	}
}

// reportCPU adds the process's CPU time per operation (user and system,
// every thread, the garbage collector's and the scheduler's included) as
// cpu-ns/op: on a machine shared with other work it is steadier than the
// wall time, and it is what a server pays per request. Call the function
// it returns when the loop is done.
func reportCPU(b *testing.B) func() {
	start := processCPU(b)
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("reading the process's CPU time: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
