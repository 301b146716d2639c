package gc

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// dyingDriver fails every call once dead is set, as storage looks from a
// process that was killed.
type dyingDriver struct {
	*hookDriver
	dead atomic.Bool
}

var errKilled = errors.New("process killed")

func (d *dyingDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if d.dead.Load() {
		return errKilled
	}
	return d.hookDriver.PutContent(ctx, p, b)
}

func (d *dyingDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if d.dead.Load() {
		return nil, errKilled
	}
	return d.hookDriver.GetContent(ctx, p)
}

func (d *dyingDriver) Delete(ctx context.Context, p string) error {
	if d.dead.Load() {
		return errKilled
	}
	return d.hookDriver.Delete(ctx, p)
}

func (d *dyingDriver) Stat(ctx context.Context, p string) (storage.FileInfo, error) {
	if d.dead.Load() {
		return nil, errKilled
	}
	return d.hookDriver.Stat(ctx, p)
}

func TestRunnerKilledMidSweepIsTakenOverAfterExpiry(t *testing.T) {
	ctx := context.Background()
	aged := newAged(48 * time.Hour)
	f := buildSweepFixture(t, aged)
	clk := &clock{t: time.Now()}

	// Node 1 dies right after deleting its first blob: its pending set and the
	// lease stay behind.
	deletes := 0
	dying := &dyingDriver{}
	dying.hookDriver = &hookDriver{agedDriver: aged, match: func(op, p string) bool {
		if op == "delete" && strings.HasPrefix(p, blobsRoot) {
			deletes++
		}
		return deletes == 2
	}, hook: func() { dying.dead.Store(true) }}
	r1, err := NewRunner(dying, testConfig(), RunnerOptions{Holder: "node-1", LeaseSettle: time.Millisecond, Logger: discard(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r1.Run(ctx, RunOptions{}); !errors.Is(err, errKilled) {
		t.Fatalf("node 1 should have died mid-sweep, got %v", err)
	}
	if len(pendingSetsIn(t, aged)) == 0 {
		t.Fatal("the killed node left no pending set; the test does not exercise the takeover")
	}
	// Between the two runs the store is consistent for clients: every tag pulls.
	for repo, tag := range map[string]string{"a": "v1", "b/nested": "latest", "multi": "1.0"} {
		if err := pull(ctx, aged, repo, tag); err != nil {
			t.Errorf("pull %s:%s after the kill: %v", repo, tag, err)
		}
	}

	r2, err := NewRunner(aged, testConfig(), RunnerOptions{Holder: "node-2", LeaseSettle: time.Millisecond, Logger: discard(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Run(ctx, RunOptions{}); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("node 2 ran while node 1's lease was live: %v", err)
	}
	clk.advance(time.Duration(testConfig().LeaseTTL) + time.Second)
	rep, err := r2.Run(ctx, RunOptions{})
	if err != nil {
		t.Fatalf("node 2 after expiry: %v", err)
	}
	if rep.Token != 2 {
		t.Errorf("node 2's token = %d, want 2", rep.Token)
	}
	after := blobsIn(t, aged)
	for _, d := range f.kept {
		if !after[d] {
			t.Errorf("reachable blob %s deleted", d)
		}
	}
	for _, d := range f.swept {
		if after[d] {
			t.Errorf("garbage blob %s survived the takeover run", d)
		}
	}
	for _, l := range f.sweptLinks {
		if _, err := aged.Stat(ctx, l); !isNotFound(err) {
			t.Errorf("dangling layer link %s survived: %v", l, err)
		}
	}
	if m := pendingSetsIn(t, aged); len(m) > 0 {
		t.Errorf("pending sets left after the takeover run: %v", m)
	}
}
