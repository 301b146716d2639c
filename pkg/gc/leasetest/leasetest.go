// Package leasetest is the safety suite of GC's lease (gc.Lease), run
// unchanged on every kind of storage it is kept in: the in-memory and
// filesystem drivers (pkg/gc) and the object stores on their servers
// (e2e/objectstore), as the reference registry's testsuites package is for
// drivers.
package leasetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// Options adjust the suite to the store.
type Options struct {
	// Settle is the leases' settle time. Leases on a driver with
	// conditional writes never wait it; the suite runs them with 0, so
	// that only the conditional writes can keep racers apart.
	Settle time.Duration
	// Rounds is how many times the racing tests race. Default 10.
	Rounds int
}

// Run runs the suite. open returns a driver on a new, empty store at each
// call. A driver that offers storage.ConditionalWriter must keep the lease
// with it, and is also checked in the window between a holder's check and
// its write, which only conditional writes close; one that does not is
// checked on settle-and-read-back (Options.Settle must then be well above
// the store's latency).
func Run(t *testing.T, open func(t *testing.T) storage.Driver, opts Options) {
	if opts.Rounds == 0 {
		opts.Rounds = 10
	}
	_, conditional := storage.ConditionalWriterOf(open(t))
	if !conditional {
		if opts.Settle <= 0 {
			t.Fatal("leasetest: a driver without conditional writes needs Options.Settle")
		}
	} else {
		opts.Settle = 0
	}
	t.Run("OneOfManyRacersAcquiresAFreeLease", func(t *testing.T) {
		for round := range opts.Rounds {
			race(t, open(t), opts, round)
		}
	})
	t.Run("OneOfManyRacersTakesOverAnExpiredLease", func(t *testing.T) {
		for round := range opts.Rounds {
			d := open(t)
			old := gc.NewLease(d, "old", time.Minute, opts.Settle, func() time.Time { return time.Now().Add(-time.Hour) })
			if err := old.Acquire(context.Background()); err != nil {
				t.Fatalf("writing the expired lease: %v", err)
			}
			race(t, d, opts, round)
		}
	})
	t.Run("ExpiredLeaseIsTakenOverWithANewToken", func(t *testing.T) { takeover(t, open(t), opts) })
	if conditional {
		t.Run("HolderTakenOverAfterItsCheckCannotRenew", func(t *testing.T) {
			staleWrite(t, open(t), func(ctx context.Context, l *gc.Lease) error {
				if err := l.Renew(ctx); !errors.Is(err, gc.ErrLeaseLost) {
					return fmt.Errorf("the renewal of a lease taken over after its check returned %v, want ErrLeaseLost", err)
				}
				return nil
			})
		})
		t.Run("HolderTakenOverAfterItsCheckCannotRelease", func(t *testing.T) {
			staleWrite(t, open(t), func(ctx context.Context, l *gc.Lease) error {
				if err := l.Release(ctx); err != nil {
					return fmt.Errorf("the release of a lease taken over after its check returned %v, want nil (nothing to release)", err)
				}
				return nil
			})
		})
	}
}

// race has five nodes acquire the lease at once, as five runners starting
// together do, and requires exactly one to win. Every node reads the lease
// before any writes it (the closest race there is: all of them find it free
// or expired), so only the conditional write, or the settle time, can keep
// them apart.
func race(t *testing.T, d storage.Driver, opts Options, round int) {
	t.Helper()
	const racers = 5
	ctx := context.Background()
	var (
		wg, read sync.WaitGroup
		mu       sync.Mutex
		winners  []string
	)
	read.Add(racers)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			holder := fmt.Sprintf("node-%d", i)
			l := gc.NewLease(afterFirstRead(d, &read), holder, time.Minute, opts.Settle, nil)
			err := l.Acquire(ctx)
			switch {
			case err == nil:
				mu.Lock()
				winners = append(winners, holder)
				mu.Unlock()
			case !errors.Is(err, gc.ErrLeaseHeld):
				t.Errorf("round %d: %s: acquire: %v", round, holder, err)
			}
		}()
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("round %d: %d of %d racing nodes think they hold the lease (%v), want exactly 1", round, len(winners), racers, winners)
	}
	rec, _, err := gc.ReadLease(ctx, d)
	if err != nil || rec.Holder != winners[0] {
		t.Fatalf("round %d: %s won, but the stored lease is %+v (%v)", round, winners[0], rec, err)
	}
}

// afterFirstRead returns d with its first read (of the lease, by Acquire)
// waiting until all is done, each racer having made its own.
func afterFirstRead(d storage.Driver, all *sync.WaitGroup) storage.Driver {
	b := &barrier{Driver: d, all: all}
	if cond, ok := storage.ConditionalWriterOf(d); ok {
		return barrierConditional{barrier: b, cond: cond}
	}
	return b
}

type barrier struct {
	storage.Driver
	once sync.Once
	all  *sync.WaitGroup
}

func (b *barrier) wait() {
	b.once.Do(func() {
		b.all.Done()
		b.all.Wait()
	})
}

func (b *barrier) GetContent(ctx context.Context, p string) ([]byte, error) {
	c, err := b.Driver.GetContent(ctx, p)
	b.wait()
	return c, err
}

type barrierConditional struct {
	*barrier
	cond storage.ConditionalWriter
}

func (b barrierConditional) GetContentVersion(ctx context.Context, p string) ([]byte, string, error) {
	c, v, err := b.cond.GetContentVersion(ctx, p)
	b.wait()
	return c, v, err
}

func (b barrierConditional) PutContentIf(ctx context.Context, p string, c []byte, ifVersion string) (string, error) {
	return b.cond.PutContentIf(ctx, p, c, ifVersion)
}

// takeover walks a lease through renewal, expiry and takeover on one clock.
func takeover(t *testing.T, d storage.Driver, opts Options) {
	ctx := context.Background()
	start := time.Now()
	var elapsed atomic.Int64
	now := func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	advance := func(d time.Duration) { elapsed.Add(int64(d)) }
	a := gc.NewLease(d, "a", time.Minute, opts.Settle, now)
	b := gc.NewLease(d, "b", time.Minute, opts.Settle, now)
	if err := a.Acquire(ctx); err != nil {
		t.Fatalf("a could not acquire a free lease: %v", err)
	}
	if err := b.Acquire(ctx); !errors.Is(err, gc.ErrLeaseHeld) {
		t.Fatalf("b acquired a live lease: %v", err)
	}
	advance(30 * time.Second)
	if err := a.Renew(ctx); err != nil {
		t.Fatalf("a could not renew its live lease: %v", err)
	}
	advance(45 * time.Second)
	if err := b.Acquire(ctx); !errors.Is(err, gc.ErrLeaseHeld) {
		t.Fatalf("b acquired a renewed lease: %v", err)
	}
	advance(time.Minute)
	if err := b.Acquire(ctx); err != nil {
		t.Fatalf("b could not take over an expired lease: %v", err)
	}
	if b.Token() != a.Token()+1 {
		t.Errorf("token after takeover = %d, want %d", b.Token(), a.Token()+1)
	}
	if err := a.Check(ctx, 0); !errors.Is(err, gc.ErrLeaseLost) {
		t.Errorf("a still believes it holds the lease: %v", err)
	}
	if err := a.Renew(ctx); !errors.Is(err, gc.ErrLeaseLost) {
		t.Errorf("a renewed a lease it lost: %v", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Errorf("release of a lost lease must be a no-op: %v", err)
	}
	if err := b.Check(ctx, 0); err != nil {
		t.Errorf("a's renewal or release disturbed b: %v", err)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatalf("b could not release its lease: %v", err)
	}
	if err := a.Acquire(ctx); err != nil || a.Token() != 3 {
		t.Errorf("after release, a must acquire with token 3: %v, token %d", err, a.Token())
	}
}

// hooked runs onRead (once) after the next GetContent, which is the read of
// a holder's check, so that another node can take the lease over between a
// holder's check and its write.
type hooked struct {
	storage.Driver
	storage.ConditionalWriter
	mu     sync.Mutex
	onRead func()
}

func (h *hooked) GetContent(ctx context.Context, p string) ([]byte, error) {
	b, err := h.Driver.GetContent(ctx, p)
	h.mu.Lock()
	f := h.onRead
	h.onRead = nil
	h.mu.Unlock()
	if f != nil {
		f()
	}
	return b, err
}

// staleWrite has a's lease taken over by b between a's check and a's write
// (a was paused past its expiry: b's clock is past it, a's is not), then
// calls write on a and requires b's lease to be intact.
func staleWrite(t *testing.T, d storage.Driver, write func(context.Context, *gc.Lease) error) {
	ctx := context.Background()
	cond, _ := storage.ConditionalWriterOf(d)
	h := &hooked{Driver: d, ConditionalWriter: cond}
	now := time.Now()
	a := gc.NewLease(h, "a", time.Minute, 0, func() time.Time { return now })
	b := gc.NewLease(d, "b", time.Minute, 0, func() time.Time { return now.Add(2 * time.Minute) })
	if !a.Conditional() {
		t.Fatal("the lease does not use the driver's conditional writes")
	}
	if err := a.Acquire(ctx); err != nil {
		t.Fatalf("a could not acquire a free lease: %v", err)
	}
	var took error
	h.mu.Lock()
	h.onRead = func() { took = b.Acquire(ctx) }
	h.mu.Unlock()
	if err := write(ctx, a); err != nil {
		t.Error(err)
	}
	if took != nil {
		t.Fatalf("b could not take over the lease a's clock still finds live: %v", took)
	}
	if err := b.Check(ctx, 0); err != nil {
		t.Errorf("a's stale write disturbed b's lease: %v", err)
	}
	rec, _, err := gc.ReadLease(ctx, d)
	if err != nil || rec.Holder != "b" || rec.Token != 2 {
		t.Errorf("stored lease = %+v (%v), want b's with token 2", rec, err)
	}
}
