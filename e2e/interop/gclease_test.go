package interop

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/gc"
)

// TestTwoScheduledOriginsCollectOneAtATime runs two origin processes on one
// store, both scheduled to collect every second. At no moment do both
// collect; the one caught sweeping is killed with SIGKILL, and the other
// takes over once the lease expires and leaves a consistent store: every
// orphan gone, every pushed image whole.
func TestTwoScheduledOriginsCollectOneAtATime(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "origin.yaml")
	if err := os.WriteFile(cfgPath, []byte("gc:\n  interval: 1s\n  leaseTTL: 10s\n  batchSize: 20\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := testenv.Binary(t, "origin")

	// An image that must survive, and orphans that must go, all old.
	seed, err := testenv.StartOrigin(t.Context(), testenv.OriginOptions{Binary: bin, Storage: "file://" + dir, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(32<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := crane.Push(img, seed.Addr+"/lease/app:v1", craneOpts(t)...); err != nil {
		t.Fatal(err)
	}
	if err := seed.Stop(testenv.DefaultStopTimeout); err != nil {
		t.Fatal(err)
	}
	var orphans []string
	for i := range 4000 {
		b := []byte(fmt.Sprintf("orphan %d", i))
		d := digest.FromBytes(b)
		p := filepath.Join(dir, "docker/registry/v2/blobs/sha256", d.Encoded()[:2], d.Encoded(), "data")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, p)
	}
	old := time.Now().Add(-5 * time.Hour)
	if err := filepath.Walk(filepath.Join(dir, "docker"), func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	}); err != nil {
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
			Binary: bin, Storage: "file://" + dir, Dir: t.TempDir(),
			Args: []string{"--config", cfgPath, "--admin-listen", admin},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Stop(testenv.DefaultStopTimeout) })
		nodes = append(nodes, node{s, admin})
	}
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

	// Watch both until one is caught sweeping, some blobs deleted; kill it
	// there. This loop is a monitor as well as a wait: every pass checks
	// that the two never collect at once, so it polls every few
	// milliseconds throughout rather than backing off as eventually does.
	var killed, survivor node
	deadline := time.Now().Add(2 * time.Minute)
	for killed.srv == nil {
		if time.Now().After(deadline) {
			t.Fatal("no node was seen sweeping within 2 minutes")
		}
		a, okA := status(nodes[0])
		b, okB := status(nodes[1])
		if okA && okB && collecting(a) && collecting(b) {
			t.Fatalf("both nodes collect at once: %s and %s", a.Progress.Phase, b.Progress.Phase)
		}
		switch {
		case okA && a.Progress.Phase == gc.PhaseSweep && a.Progress.BlobsDeleted > 0:
			killed, survivor = nodes[0], nodes[1]
		case okB && b.Progress.Phase == gc.PhaseSweep && b.Progress.BlobsDeleted > 0:
			killed, survivor = nodes[1], nodes[0]
		default:
			time.Sleep(5 * time.Millisecond)
		}
	}
	killed.srv.Kill()
	remaining := 0
	for _, p := range orphans {
		if _, err := os.Stat(p); err == nil {
			remaining++
		}
	}
	t.Logf("killed pid %d mid-sweep with %d of %d orphans left", killed.srv.PID(), remaining, len(orphans))

	// The survivor takes over once the dead node's lease expires (10s),
	// at its next scheduled run.
	left := remaining
	if err := eventually.Wait(90*time.Second, func() bool {
		left = 0
		for _, p := range orphans {
			if _, err := os.Stat(p); err == nil {
				left++
			}
		}
		return left == 0
	}); err != nil {
		st, _ := status(survivor)
		t.Fatalf("waiting for the survivor to finish the collection: %v; %d orphans left, status %+v", err, left, st.Progress)
	}
	ref := survivor.srv.Addr + "/lease/app:v1"
	got, err := crane.Pull(ref, craneOpts(t)...)
	if err != nil {
		t.Fatalf("the pushed image no longer pulls after the takeover: %v", err)
	}
	checkBlobs(t, survivor.srv.Addr, "lease/app@"+mustDigest(t, img), got)
}
