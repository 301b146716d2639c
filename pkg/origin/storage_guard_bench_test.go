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

// BenchmarkManifestGuarded is the in-process half of e2e/bench's -against
// limits-off manifest figures: the handler's cost per manifest GET and
// HEAD, by tag and by digest (one storage call each once the manifest's
// content is cached), with storageTimeout on (the default) and off, on
// in-memory storage (the guard's own cost) and on the filesystem (a driver
// that ignores its context, as e2e/bench's origin runs on), one request at
// a time and from many goroutines at once. Compare the two timeouts'
// cpu-ns/op within one run.
func BenchmarkManifestGuarded(b *testing.B) {
	fsd, err := filesystem.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range []storage.Driver{inmemory.New(), fsd} {
		seeded := seedRepo(openOrigin(b, d), "team/bench")
		requests := []struct{ name, method, ref string }{
			{"GET-tag", http.MethodGet, "latest"},
			{"HEAD-tag", http.MethodHead, "latest"},
			{"GET-digest", http.MethodGet, seeded.digest.String()},
			{"HEAD-digest", http.MethodHead, seeded.digest.String()},
		}
		for _, timeout := range []time.Duration{DefaultConfig().StorageTimeout, 0} {
			cfg := DefaultConfig()
			cfg.StorageTimeout = timeout
			s, err := New(d, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			if err != nil {
				b.Fatal(err)
			}
			// As net/http's, each request has a context of its own, cancelled
			// once it is answered, under one of the connection's.
			conn, cancel := context.WithCancel(context.Background())
			b.Cleanup(cancel)
			for _, rq := range requests {
				newRequest := func() *http.Request {
					req, _ := http.NewRequestWithContext(conn, rq.method, "/v2/team/bench/manifests/"+rq.ref, nil)
					req.Header.Set("Accept", mediaTypeOCIManifest)
					return req
				}
				serve := func(b *testing.B, req *http.Request) {
					ctx, cancel := context.WithCancel(conn)
					defer cancel()
					w := httptest.NewRecorder()
					s.ServeHTTP(w, req.WithContext(ctx))
					if w.Code != http.StatusOK {
						b.Fatalf("%s %s answered %d: %s", req.Method, req.URL, w.Code, w.Body)
					}
				}
				name := d.Name() + "/storageTimeout=" + timeout.String() + "/" + rq.name
				b.Run(name+"/serial", func(b *testing.B) {
					req := newRequest()
					b.ReportAllocs()
					defer reportCPU(b)()
					for b.Loop() {
						serve(b, req)
					}
				})
				b.Run(name+"/parallel", func(b *testing.B) {
					b.ReportAllocs()
					defer reportCPU(b)()
					b.SetParallelism(16)
					b.RunParallel(func(pb *testing.PB) {
						req := newRequest()
						for pb.Next() {
							serve(b, req)
						}
					})
				})
			}
		}
	}
}

// BenchmarkStorageGuardCall is the guard's own cost per storage call: a
// call that returns at once, with storageTimeout on (a handoff to a worker
// and back) and off (the breaker's bookkeeping alone).
func BenchmarkStorageGuardCall(b *testing.B) {
	for _, timeout := range []time.Duration{DefaultConfig().StorageTimeout, 0} {
		h := &storageHealth{driver: "inmemory", timeout: timeout, now: time.Now,
			log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: newMetrics(nil)}
		g := newGuardedDriver(inmemory.New(), h)
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		call := func() {
			if _, err := guarded(g, ctx, readOp, "stat", "/x", true, nil, func(context.Context) (int, error) { return 1, nil }); err != nil {
				b.Fatal(err)
			}
		}
		name := "storageTimeout=" + timeout.String()
		b.Run(name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				call()
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b)()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call()
				}
			})
		})
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
