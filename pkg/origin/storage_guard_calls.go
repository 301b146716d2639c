package origin

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// A storage call under storageTimeout cannot simply run on the request's
// own goroutine: the drivers that matter (filesystem, HDFS) ignore their
// context, so only a goroutine that is not stuck in the call can answer
// 503 when the call stalls. Either the call is handed to a worker while
// the request waits, or (stallAnswer: manifest GET and HEAD over HTTP/1,
// the most frequent requests) it runs inline and the watchdog answers the
// request if it stalls; the handoff, and the thread wake-ups it costs the
// scheduler when a processor is idle, is what running inline saves. What
// a handed-off call costs beyond the driver is kept to one handoff to a
// goroutine that already exists and back, each side waiting on one
// channel:
//
//   - calls go to long-lived workers, not to a new goroutine each: a new
//     goroutine starts on a small stack that a driver call (path regexps,
//     syscalls) outgrows, and copying it on every call costs more than the
//     call itself;
//   - neither the request nor the worker waits on a timer, a context or a
//     select: one watchdog goroutine, ticking every sixteenth of
//     storageTimeout, ends the wait of a request whose call has run for
//     sixteen ticks or whose context is done (a select locks and queues
//     on every channel it waits on, a timer each call is a clock read and
//     a heap entry);
//   - a worker whose call was given up on releases what the call returns
//     itself, then goes; the watchdog retires workers idle for
//     storageWorkerIdle, so a burst leaves nothing behind (the watchdog
//     goes with the last worker).

// storageWorkerIdle is how long a worker waits for the next call before
// it is retired: long enough to live through the pauses of a steady load,
// short enough that the goroutines of a burst do not stay.
const storageWorkerIdle = 10 * time.Second

// storageTimeoutTicks is how many watchdog ticks make storageTimeout: a
// call is given up on between 15/16 of storageTimeout and storageTimeout
// after it started.
const storageTimeoutTicks = 16

// How a request's wait for its call ended.
const (
	callRunning   uint32 = iota // not yet
	callDone                    // the call returned
	callExpired                 // it ran for storageTimeout
	callCancelled               // the request's context is done
)

// storageJob is a call given to a worker.
type storageJob interface {
	state() *callState
	run()
	// abandoned releases what the call returned, once it has run, when
	// the request no longer waits for it.
	abandoned()
}

// callState is what the request, the worker and the watchdog share about
// one call. Whoever moves it out of callRunning wakes the request, so the
// request is woken exactly once.
type callState struct {
	ctx   context.Context // the request's, which the watchdog watches
	tick  int64           // the watchdog's count when the call started
	done  chan struct{}   // the worker's: wakes the request; nil: inline
	phase atomic.Uint32

	// Of a call run inline (see stallAnswer): what the watchdog needs to
	// answer its request, and answered, closed once it has.
	answer   stallAnswer
	guard    *guardedDriver
	class    opClass
	op, path string
	answered chan struct{}
}

// end moves the call to phase p and wakes the request, unless its wait
// has ended already.
func (c *callState) end(p uint32) bool {
	if !c.phase.CompareAndSwap(callRunning, p) {
		return false
	}
	c.done <- struct{}{} // buffered, and this is the call's only send
	return true
}

// stallAnswer lets a request's storage calls run inline, on the request's
// own goroutine, with no handoff: when one stalls past storageTimeout, the
// watchdog answers the request in its place through answerStall, which
// must send a complete response that the client needs nothing more after (an
// HTTP/1 response with its length, the connection to be closed). Over
// HTTP/2 a response ends only when its handler returns, so only HTTP/1
// requests get one. The request's goroutine stays in the call until the
// driver returns, as a worker would.
type stallAnswer interface {
	answerStall(err error)
}

type stallAnswerKey struct{}

// withStallAnswer returns ctx under which storage calls run inline, a
// stalled one answered by a.
func withStallAnswer(ctx context.Context, a stallAnswer) context.Context {
	return context.WithValue(ctx, stallAnswerKey{}, a)
}

// errAnswered is what a call run inline returns when the watchdog has
// answered its request: the request must not write anything more.
var errAnswered = errors.New("the request was answered while its storage call stalled")

// runInline runs job on the calling goroutine under the watchdog. It
// returns callDone, or callExpired once the watchdog has answered the
// request (c.answer) because the call ran for its time; then what the
// call returned has been released.
func (w *storageWorkers) runInline(job storageJob) uint32 {
	c := job.state()
	slot := w.take(c, &w.idleSlots, func() *storageWorker { return &storageWorker{} })
	slot.cur.Store(c)
	job.run()
	slot.cur.Store(nil)
	w.putIdle(&w.idleSlots, slot)
	if c.phase.CompareAndSwap(callRunning, callDone) {
		return callDone
	}
	<-c.answered // the request's writer is the watchdog's until then
	job.abandoned()
	return callExpired
}

// storageWorker is one goroutine that runs calls, or the slot of a call
// run inline (no jobs, no done) that the watchdog watches.
type storageWorker struct {
	jobs chan storageJob // buffered 1; a nil job retires the worker
	done chan struct{}   // buffered 1; see callState.done
	cur  atomic.Pointer[callState]
	// idleSince is the watchdog's count when the worker last became idle
	// (under storageWorkers.mu).
	idleSince int64
}

// storageWorkers runs storage calls on goroutines that outlive them.
type storageWorkers struct {
	tick      time.Duration // a sixteenth of storageTimeout, 1ms at least
	callTicks int64         // storageTimeout in ticks
	idleTicks int64         // storageWorkerIdle in ticks
	start     time.Time     // ticks count from here (monotonic)
	now       atomic.Int64  // ticks since start, as of the watchdog's last

	mu        sync.Mutex
	idle      []*storageWorker // the last to become idle last
	idleSlots []*storageWorker // the same, of the slots of inline calls
	all       map[*storageWorker]struct{}
	watching  bool // the watchdog runs (while there are workers or slots)
}

func newStorageWorkers(timeout time.Duration) *storageWorkers {
	tick := max(timeout/storageTimeoutTicks, time.Millisecond)
	return &storageWorkers{tick: tick, callTicks: max(int64(timeout/tick), 1), idleTicks: int64(storageWorkerIdle/tick) + 1,
		start: time.Now(), all: make(map[*storageWorker]struct{})}
}

// run has job run by a worker and waits until the call returns, runs
// for its time or the request's context is done, whichever comes first.
// It returns which it was. A call not waited for to its end is left to
// its worker, which releases what it returns (storageJob.abandoned).
func (w *storageWorkers) run(job storageJob) uint32 {
	c := job.state()
	wk := w.take(c, &w.idle, func() *storageWorker {
		wk := &storageWorker{jobs: make(chan storageJob, 1), done: make(chan struct{}, 1)}
		go w.serve(wk)
		return wk
	})
	c.done = wk.done
	wk.jobs <- job
	<-c.done
	p := c.phase.Load()
	if p == callDone {
		// Idle again only now: its done channel has had its one send for
		// this call, and the next request may wait on it.
		w.putIdle(&w.idle, wk)
	}
	return p
}

// take takes the most recently idle of *idle (workers or slots), or one
// that fresh makes, for call c.
func (w *storageWorkers) take(c *callState, idle *[]*storageWorker, fresh func() *storageWorker) *storageWorker {
	w.mu.Lock()
	defer w.mu.Unlock()
	var wk *storageWorker
	if n := len(*idle); n > 0 {
		wk = (*idle)[n-1]
		(*idle)[n-1] = nil
		*idle = (*idle)[:n-1]
	} else {
		wk = fresh()
		w.all[wk] = struct{}{}
		w.watch0()
	}
	c.tick = w.now.Load()
	return wk
}

// putIdle puts wk back on *idle.
func (w *storageWorkers) putIdle(idle *[]*storageWorker, wk *storageWorker) {
	w.mu.Lock()
	wk.idleSince = w.now.Load()
	*idle = append(*idle, wk)
	w.mu.Unlock()
}

// watch0 starts the watchdog if it does not run. w.mu is held.
func (w *storageWorkers) watch0() {
	if !w.watching {
		w.watching = true
		w.now.Store(int64(time.Since(w.start) / w.tick))
		go w.watch()
	}
}

// serve runs the calls handed to wk until it is retired.
func (w *storageWorkers) serve(wk *storageWorker) {
	for job := range wk.jobs {
		if job == nil {
			return
		}
		c := job.state()
		wk.cur.Store(c)
		job.run()
		wk.cur.Store(nil)
		if !c.end(callDone) {
			// Given up on: nobody takes what the call returned. The worker
			// goes rather than back to work: the request it ran for may not
			// have taken the watchdog's wake-up from its done channel yet,
			// and must not leave it for the next request to take.
			job.abandoned()
			w.mu.Lock()
			delete(w.all, wk)
			w.mu.Unlock()
			return
		}
	}
}

// watch ends the waits of calls that ran for their time or whose request
// went away, and retires idle workers, until there are no workers.
func (w *storageWorkers) watch() {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for range t.C {
		now := int64(time.Since(w.start) / w.tick)
		w.now.Store(now)
		goOn, stalled := w.patrol(now)
		for _, c := range stalled {
			err := c.guard.timedOut(c.class, c.op, c.path)
			go func() {
				defer close(c.answered)
				c.answer.answerStall(err)
			}()
		}
		if !goOn {
			return
		}
	}
}

// patrol is one tick of the watchdog. It reports whether the watchdog
// goes on, and the inline calls that ran for their time, whose requests
// it is to answer.
func (w *storageWorkers) patrol(now int64) (goOn bool, stalled []*callState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idle = w.retire(now, w.idle)
	w.idleSlots = w.retire(now, w.idleSlots)
	for wk := range w.all {
		c := wk.cur.Load()
		switch {
		case c == nil:
		case c.done == nil: // inline: its request's goroutine is in the call
			// answered is set before the call can be seen expired: the
			// request reads it only then.
			if now-c.tick >= w.callTicks && c.phase.Load() == callRunning {
				c.answered = make(chan struct{})
				if c.phase.CompareAndSwap(callRunning, callExpired) {
					stalled = append(stalled, c)
				}
			}
		case now-c.tick >= w.callTicks:
			c.end(callExpired)
		case c.ctx.Err() != nil:
			c.end(callCancelled)
		}
	}
	if len(w.all) == 0 {
		w.watching = false
		return false, stalled
	}
	return true, stalled
}

// retire lets go of the workers or slots of idle that have been idle for
// storageWorkerIdle (the first of idle are the longest idle), and returns
// the others. w.mu is held.
func (w *storageWorkers) retire(now int64, idle []*storageWorker) []*storageWorker {
	old := 0
	for old < len(idle) && now-idle[old].idleSince >= w.idleTicks {
		wk := idle[old]
		delete(w.all, wk)
		if wk.jobs != nil {
			wk.jobs <- nil // idle: its buffer is empty
		}
		old++
	}
	if old == 0 {
		return idle
	}
	n := copy(idle, idle[old:])
	clear(idle[n:])
	return idle[:n]
}

// pendingCall is what a guarded call runs and where its result is left
// for the request.
type pendingCall[T any] struct {
	callState
	fctx    context.Context // f's: the request's, or with storageTimeout as its deadline
	f       func(context.Context) (T, error)
	cleanup func(T) // releases v of a call given up on; nil: nothing to release
	v       T
	err     error
}

func (p *pendingCall[T]) state() *callState { return &p.callState }

func (p *pendingCall[T]) run() { p.v, p.err = p.f(p.fctx) }

func (p *pendingCall[T]) abandoned() {
	if p.cleanup != nil && p.err == nil {
		p.cleanup(p.v)
	}
}
