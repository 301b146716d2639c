package gc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestTwoRunnersOnlyOneCollects(t *testing.T) {
	ctx := context.Background()
	drv := newAged(48 * time.Hour)
	buildSweepFixture(t, drv)
	r1 := newTestRunner(t, drv, testConfig(), "node-1")
	r2 := newTestRunner(t, drv, testConfig(), "node-2")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, r := range []*Runner{r1, r2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.Run(ctx, RunOptions{})
		}()
	}
	wg.Wait()
	ok, held := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrLeaseHeld):
			held++
		default:
			t.Errorf("run: %v", err)
		}
	}
	// Either one ran while the other was refused, or they ran one after
	// the other; never both at once, which the lease test above covers.
	if ok == 0 {
		t.Fatalf("no runner collected: %v", errs)
	}
	if r1.Status().Running || r2.Status().Running {
		t.Errorf("a runner still reports running")
	}
}

// stealingDriver hands the lease to another node when the sweep writes its
// pending-deletion set, as if this node had been paused past its
// lease's expiry and another had taken over.
type stealingDriver struct {
	*agedDriver
	once  sync.Once
	stole chan struct{}
}

func (s *stealingDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if err := s.agedDriver.PutContent(ctx, p, b); err != nil {
		return err
	}
	if len(p) > len(pendingRoot) && p[:len(pendingRoot)] == pendingRoot {
		s.once.Do(func() {
			rec, _, _ := ReadLease(ctx, s.agedDriver)
			thief := NewLease(s.agedDriver, "thief", time.Minute, 0, nil)
			// Simulate the expiry the paused node missed.
			rec.Expires = time.Now().Add(-time.Second)
			raw := fmt.Sprintf(`{"holder":%q,"token":%d,"expires":%q}`, rec.Holder, rec.Token, rec.Expires.Format(time.RFC3339Nano))
			_ = s.agedDriver.PutContent(ctx, leasePath, []byte(raw))
			if err := thief.Acquire(ctx); err == nil {
				close(s.stole)
			}
		})
	}
	return nil
}

func TestRunnerThatLostItsLeaseDeletesNothing(t *testing.T) {
	ctx := context.Background()
	aged := newAged(48 * time.Hour)
	f := buildSweepFixture(t, aged)
	drv := &stealingDriver{agedDriver: aged, stole: make(chan struct{})}
	r, err := NewRunner(drv, testConfig(), RunnerOptions{Holder: "paused", LeaseSettle: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Run(ctx, RunOptions{})
	select {
	case <-drv.stole:
	default:
		t.Fatal("the test did not manage to steal the lease")
	}
	if !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("want ErrLeaseLost, got %v", err)
	}
	after := blobsIn(t, aged)
	for _, d := range append(f.kept, f.swept...) {
		if !after[d] {
			t.Errorf("blob %s deleted by a node that had lost its lease", d)
		}
	}
}

// holderCheckingDriver is one node's view of the shared store: before each
// blob deletion it checks that this node is the lease holder.
type holderCheckingDriver struct {
	*agedDriver
	holder  string
	t       *testing.T
	deletes *atomic.Int32
}

func (h *holderCheckingDriver) Delete(ctx context.Context, p string) error {
	if len(p) > len(blobsRoot) && p[:len(blobsRoot)] == blobsRoot {
		rec, _, err := ReadLease(ctx, h.agedDriver)
		if err != nil || rec.Holder != h.holder || !time.Now().Before(rec.Expires) {
			h.t.Errorf("%s deletes %s while the lease is %+v (%v)", h.holder, p, rec, err)
		}
		h.deletes.Add(1)
	}
	return h.agedDriver.Delete(ctx, p)
}

func TestOnlyTheLeaseHolderEverDeletes(t *testing.T) {
	ctx := context.Background()
	aged := newAged(48 * time.Hour)
	var deletes atomic.Int32
	var wg sync.WaitGroup
	for i := range 3 {
		holder := fmt.Sprintf("node-%d", i)
		drv := &holderCheckingDriver{agedDriver: aged, holder: holder, t: t, deletes: &deletes}
		r, err := NewRunner(drv, testConfig(), RunnerOptions{Holder: holder, LeaseSettle: 10 * time.Millisecond, Logger: discard()})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := pusher{drv: aged}
			for j := range 10 {
				// Fresh garbage for whoever collects next. A push that
				// meets another node's run sweeping it is told to retry
				// (errRetry): the blob is garbage either way.
				if _, err := p.blob(ctx, "r", fmt.Appendf(nil, "garbage %d/%d", i, j)); err != nil && !errors.Is(err, errRetry) {
					t.Error(err)
					return
				}
				if _, err := r.Run(ctx, RunOptions{}); err != nil && !errors.Is(err, ErrLeaseHeld) && !errors.Is(err, ErrLeaseLost) {
					t.Errorf("%s: %v", holder, err)
				}
			}
		}()
	}
	wg.Wait()
	if deletes.Load() == 0 {
		t.Fatal("no runner deleted anything: the test exercised nothing")
	}
	if left := len(blobsIn(t, aged)); left != 0 {
		// A last run by one node collects whatever the others left.
		r, _ := NewRunner(aged, testConfig(), RunnerOptions{Holder: "final", LeaseSettle: time.Millisecond, Logger: discard()})
		if _, err := r.Run(ctx, RunOptions{}); err != nil {
			t.Fatal(err)
		}
		if left := len(blobsIn(t, aged)); left != 0 {
			t.Errorf("%d garbage blobs survived", left)
		}
	}
}

// The origin hands GC an instrumented driver, and a run hands the lease its
// counting wrapper of that: the lease must still find the conditional writes
// underneath, and the run must still count its writes.
func TestLeaseFindsConditionalWritesThroughTheWrappers(t *testing.T) {
	cd := &countingDriver{Driver: storage.Instrument(inmemory.New(), storage.NewMetrics(nil))}
	l := NewLease(cd, "node", time.Minute, 0, nil)
	if !l.Conditional() {
		t.Fatal("the lease falls back to settle-and-read-back behind the origin's wrappers")
	}
	if err := l.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := cd.calls(); c.Write != 1 {
		t.Errorf("the run counted %d writes for one acquisition, want 1", c.Write)
	}
}
