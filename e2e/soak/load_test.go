package soak_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// load is the pullers and pushers running against the deployment.
type load struct {
	d      *deployment
	cancel context.CancelFunc
	// stopping is set when the workers should end after their current
	// request.
	stopping atomic.Bool
	wg       sync.WaitGroup

	pulled       atomic.Int64 // pulls completed with the right bytes
	pullFailures atomic.Int64 // pulls that failed (an error, a cut body)
	hung         atomic.Int64 // pulls and pushes that ran out requestTimeout
	pulledBy     []atomic.Int64
	pushed       atomic.Int64 // pushes completed
	pushFailures atomic.Int64

	mu sync.Mutex
	// wrong are completed pulls whose bytes were not the blob's.
	wrong   []pullResult
	pushers []*pusher
}

// progress is a snapshot of the counters, to wait for more.
type progress struct {
	pulled, pushed int64
	pulledBy       []int64
}

func (d *deployment) startLoad() *load {
	ctx, cancel := context.WithCancel(d.t.Context())
	l := &load{d: d, cancel: cancel, pulledBy: make([]atomic.Int64, len(d.agents))}
	d.t.Cleanup(l.stop)
	for w := range pullers {
		l.wg.Go(func() { l.puller(ctx, w) })
	}
	for w := range pushers {
		p := &pusher{d: d, id: w}
		l.pushers = append(l.pushers, p)
		l.wg.Go(func() { l.pushLoop(ctx, p) })
	}
	return l
}

// puller pulls the layers in turn through agent w mod 4 until stopped.
func (l *load) puller(ctx context.Context, w int) {
	agent := w % len(l.d.agents)
	for i := w; !l.stopping.Load(); i++ {
		r := l.d.pull(ctx, agent, l.d.layers[i%len(l.d.layers)])
		switch {
		case r.err != nil:
			l.pullFailures.Add(1)
			if r.hung {
				l.hung.Add(1)
			}
			// A refused connection fails at once: do not spin on a
			// killed agent.
			pause(ctx, 100*time.Millisecond)
		case r.got != r.blob.digest.String() || r.bytes != r.blob.size:
			l.mu.Lock()
			l.wrong = append(l.wrong, r)
			l.mu.Unlock()
		default:
			l.pulled.Add(1)
			l.pulledBy[agent].Add(1)
		}
	}
}

func (l *load) pushLoop(ctx context.Context, p *pusher) {
	for n := 0; !l.stopping.Load(); n++ {
		if p.push(ctx, n).err != nil {
			l.pushFailures.Add(1)
			if ctx.Err() == nil {
				pause(ctx, 100*time.Millisecond)
			}
			continue
		}
		l.pushed.Add(1)
	}
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (l *load) mark() progress {
	p := progress{pulled: l.pulled.Load(), pushed: l.pushed.Load(), pulledBy: make([]int64, len(l.pulledBy))}
	for i := range l.pulledBy {
		p.pulledBy[i] = l.pulledBy[i].Load()
	}
	return p
}

// waitFor waits until pulls more pulls and pushes more pushes have
// completed from now on.
func (l *load) waitFor(what string, pulls, pushes int64) {
	l.d.t.Helper()
	from := l.mark()
	eventually(l.d.t, fmt.Sprintf("%s: %d more pulls and %d more pushes (%s)", what, pulls, pushes, l), phaseTimeout, func() bool {
		return l.pulled.Load()-from.pulled >= pulls && l.pushed.Load()-from.pushed >= pushes
	})
}

// stop ends the load: each worker finishes the request it is making, so
// that no push is cut by the test itself.
func (l *load) stop() {
	l.stopping.Store(true)
	l.wg.Wait()
	l.cancel()
}

func (l *load) String() string {
	return fmt.Sprintf("%d pulls completed, %d failed (%d hung); %d pushes completed, %d failed",
		l.pulled.Load(), l.pullFailures.Load(), l.hung.Load(), l.pushed.Load(), l.pushFailures.Load())
}

// checkPulls fails the test for every completed pull whose bytes were not
// the blob's: a fault may fail a pull, never make it return other bytes.
func (l *load) checkPulls() {
	t := l.d.t
	t.Helper()
	for i, r := range l.wrong {
		if i == 10 {
			t.Errorf("... and %d more", len(l.wrong)-10)
			break
		}
		t.Errorf("a pull through agent %d completed with %d bytes of digest %s, want %d bytes of %s",
			r.agent, r.bytes, r.got, r.blob.size, r.blob.digest)
	}
	if l.pulled.Load() == 0 {
		t.Error("no pull completed: the soak proved nothing")
	}
	if n := l.hung.Load(); n > 0 {
		t.Logf("%d requests ran out their %s timeout", n, requestTimeout)
	}
}

func (l *load) pushes() []pushRecord {
	var all []pushRecord
	for _, p := range l.pushers {
		all = append(all, p.done...)
	}
	return all
}

// errorsSummary lists distinct errors, for logs.
func errorsSummary(errs []error, n int) string {
	seen := map[string]int{}
	var order []string
	for _, err := range errs {
		s := err.Error()
		if seen[s] == 0 {
			order = append(order, s)
		}
		seen[s]++
	}
	var b strings.Builder
	for i, s := range order {
		if i == n {
			fmt.Fprintf(&b, "\n  ... %d more kinds", len(order)-n)
			break
		}
		fmt.Fprintf(&b, "\n  %dx %s", seen[s], s)
	}
	return b.String()
}
