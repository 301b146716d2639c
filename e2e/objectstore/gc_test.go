package objectstore

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/storage/drivers"
)

// TestGCOnlineWithPushesOnTwoOrigins runs two origins on one bucket, both
// scheduled to collect every second, while images are pushed to both. At no
// moment do both collect (the lease in the bucket holds), every orphan goes
// once it is older than the grace period (1m, the minimum: object stores
// set their objects' times themselves, so the test waits it out), and every
// image pushed before or during the collections pulls intact.
func TestGCOnlineWithPushesOnTwoOrigins(t *testing.T) {
	eachStore(t, testGCOnlineWithPushes)
}

func testGCOnlineWithPushes(t *testing.T, o *testenv.ObjectStore) {
	storageURL := o.StorageURL("/shoal")
	bin := testenv.Binary(t, "origin")

	seed, err := testenv.StartOrigin(t.Context(), testenv.OriginOptions{Binary: bin, Storage: storageURL, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	keep := pushImage(t, seed.Addr, "gc/keep:v1")
	if err := seed.Stop(testenv.DefaultStopTimeout); err != nil {
		t.Fatal(err)
	}
	drv, err := drivers.Open(t.Context(), storageURL)
	if err != nil {
		t.Fatal(err)
	}
	var orphans []string
	for i := range 60 {
		b := fmt.Appendf(nil, "orphan %d", i)
		d := digest.FromBytes(b)
		p := fmt.Sprintf("/docker/registry/v2/blobs/sha256/%s/%s/data", d.Encoded()[:2], d.Encoded())
		if err := drv.PutContent(t.Context(), p, b); err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, p)
	}
	cfg := filepath.Join(t.TempDir(), "origin.yaml")
	if err := os.WriteFile(cfg, []byte("gc:\n  interval: 1s\n  leaseTTL: 10s\n  batchSize: 20\n  grace: 1m\n  uploadMaxAge: 1m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	type node struct {
		srv   *testenv.Server
		admin string
	}
	var nodes []node
	for range 2 {
		admin, err := testenv.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		s, err := testenv.StartOrigin(t.Context(), testenv.OriginOptions{
			Binary: bin, Storage: storageURL, Dir: t.TempDir(),
			Args: []string{"--config", cfg, "--admin-listen", admin},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Stop(testenv.DefaultStopTimeout) })
		nodes = append(nodes, node{s, admin})
	}

	// Pushes to both nodes, one every two seconds, for as long as the
	// collections run: enough to overlap every phase of several runs, few
	// enough that fake-gcs-server, which reads the whole bucket for every
	// listing, keeps up.
	ctx, stopPushing := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	pushed := map[string]string{} // ref -> digest
	var mu sync.Mutex
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			img, err := random.Image(64<<10, 2)
			if err != nil {
				t.Error(err)
				return
			}
			n := nodes[i%2]
			ref := fmt.Sprintf("gc/pushed:%d", i)
			if err := crane.Push(img, n.srv.Addr+"/"+ref, crane.Insecure, crane.WithContext(ctx)); err != nil {
				if ctx.Err() == nil {
					t.Errorf("push of %s to %s during GC: %v", ref, n.srv.Addr, err)
				}
				return
			}
			d, _ := img.Digest()
			mu.Lock()
			pushed[ref] = d.String()
			mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	})

	status := func(n node) (gc.Status, bool) {
		resp, err := http.Get("http://" + n.admin + "/admin/v1/gc")
		if err != nil {
			return gc.Status{}, false
		}
		defer resp.Body.Close()
		var st gc.Status
		return st, json.NewDecoder(resp.Body).Decode(&st) == nil
	}
	collecting := func(st gc.Status) bool {
		return st.Running && st.Progress.Phase != gc.PhaseLease && st.Progress.Phase != gc.PhaseIdle
	}
	// Every poll also checks that the two nodes never collect at once.
	left := len(orphans)
	if err := eventually.Wait(6*time.Minute, func() bool {
		a, okA := status(nodes[0])
		b, okB := status(nodes[1])
		if okA && okB && collecting(a) && collecting(b) {
			t.Fatalf("both nodes collect at once: %s and %s", a.Progress.Phase, b.Progress.Phase)
		}
		left = 0
		for _, p := range orphans {
			if _, err := drv.Stat(t.Context(), p); err == nil {
				left++
			}
		}
		return left == 0
	}); err != nil {
		t.Fatalf("%d of %d orphans left after scheduled collections: %v", left, len(orphans), err)
	}
	stopPushing()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(pushed) == 0 {
		t.Fatal("no push completed while the collections ran")
	}
	t.Logf("%d images pushed while the orphans were collected", len(pushed))
	pushed["gc/keep:v1"] = keep
	for ref, d := range pushed {
		checkImage(t, nodes[0].srv.Addr, ref, d)
	}
}
