package soak_test

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/internal/eventually"
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
	wrong []pullResult
	// failed are the pulls' errors, with the phase they happened in.
	failed  []error
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
			l.mu.Lock()
			l.failed = append(l.failed, fmt.Errorf("[%s] agent %d: %w", l.d.currentPhase(), agent, r.err))
			l.mu.Unlock()
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
	eventually.Within(l.d.t, phaseTimeout, fmt.Sprintf("%s: %d more pulls and %d more pushes (%s)", what, pulls, pushes, l), func() bool {
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
	l.d.logf("%d pulls failed cleanly (an error, never wrong bytes):%s", len(l.failed), errorsSummary(l.failed, 12))
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

// errorsSummary lists distinct errors, most frequent first, for logs;
// upload ids and digests are left out so that alike errors count as one.
func errorsSummary(errs []error, n int) string {
	seen := map[string]int{}
	for _, err := range errs {
		s := uuidPattern.ReplaceAllString(err.Error(), "<id>")
		seen[digestPattern.ReplaceAllString(s, "<digest>")]++
	}
	kinds := make([]string, 0, len(seen))
	for s := range seen {
		kinds = append(kinds, s)
	}
	sort.Slice(kinds, func(i, j int) bool { return seen[kinds[i]] > seen[kinds[j]] })
	var b strings.Builder
	for i, s := range kinds {
		if i == n {
			fmt.Fprintf(&b, "\n  ... %d more kinds", len(kinds)-n)
			break
		}
		fmt.Fprintf(&b, "\n  %dx %.400s", seen[s], s)
	}
	return b.String()
}

var (
	uuidPattern   = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	digestPattern = regexp.MustCompile(`sha256:[0-9a-f]{64}`)
)
