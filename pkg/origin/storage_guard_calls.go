package origin

import (
	"context"
	"sync"
	"time"
)

// A storage call under storageTimeout cannot run on the request's own
// goroutine: the drivers that matter (filesystem, HDFS) ignore their
// context, so only a request that is not stuck in the call can answer 503
// when the call stalls. What a call costs beyond the driver is therefore
// kept to a handoff to a goroutine that already exists:
//
//   - calls go to long-lived workers, not to a new goroutine each: a new
//     goroutine starts on a small stack that a driver call (path regexps,
//     syscalls) outgrows, and copying it on every call costs more than the
//     call itself;
//   - the request waits for its deadline on a channel shared with the
//     calls that started in the same sixteenth of storageTimeout
//     (deadlineBuckets), not on a context deadline and a timer made for
//     each;
//   - workers idle for storageWorkerIdle exit, so a burst leaves nothing
//     behind; they too wait on shared channels.

// storageWorkerIdle is how long a worker waits for the next call before
// it exits: long enough to live through the pauses of a steady load, short
// enough that the goroutines of a burst do not stay.
const storageWorkerIdle = 10 * time.Second

// storageJob is a call given to a worker.
type storageJob interface {
	run()
	// abandoned releases what the call returned, once it has run, when
	// the request no longer waits for it.
	abandoned()
}

// storageCall is one call handed to a worker, and what the request waits
// on. It is reused once the worker has finished with it.
type storageCall struct {
	job     storageJob
	done    chan struct{}   // the worker sends once the job has run
	expired <-chan struct{} // closed once the request has waited long enough
}

// storageWorkers runs storage calls on goroutines that outlive them.
type storageWorkers struct {
	work      chan *storageCall // unbuffered: a send succeeds only if a worker waits
	calls     sync.Pool         // of *storageCall
	deadlines *deadlineBuckets  // the requests' (storageTimeout)
	idle      *deadlineBuckets  // the workers' (storageWorkerIdle)
}

func newStorageWorkers(timeout time.Duration) *storageWorkers {
	w := &storageWorkers{work: make(chan *storageCall),
		deadlines: newDeadlineBuckets(timeout), idle: newDeadlineBuckets(storageWorkerIdle)}
	w.calls.New = func() any { return &storageCall{done: make(chan struct{}, 1)} }
	return w
}

// start hands job to an idle worker, or to a new one if none waits. The
// caller waits on the call's done and expired, and gives the call back
// with release once done has been received.
func (w *storageWorkers) start(job storageJob) *storageCall {
	c := w.calls.Get().(*storageCall)
	c.job = job
	c.expired = w.deadlines.expiry()
	select {
	case w.work <- c:
	default:
		go w.serve(c)
	}
	return c
}

// release returns a call whose done has been received to the pool.
func (w *storageWorkers) release(c *storageCall) {
	c.job, c.expired = nil, nil
	w.calls.Put(c)
}

// abandon leaves c to finish without the request: what it returns once
// it does is released, and c goes back to the pool.
func (w *storageWorkers) abandon(c *storageCall) {
	go func() {
		<-c.done
		c.job.abandoned()
		w.release(c)
	}()
}

// serve runs c, then the calls handed to it, until none comes for
// storageWorkerIdle. After the send on done, c belongs to the request
// again (which may reuse it at once): the worker does not touch it.
func (w *storageWorkers) serve(c *storageCall) {
	for {
		c.job.run()
		c.done <- struct{}{}
		select {
		case c = <-w.work:
		case <-w.idle.expiry():
			return
		}
	}
}

// pendingCall is what a guarded call runs and where its result is left
// for the request.
type pendingCall[T any] struct {
	ctx     context.Context
	f       func(context.Context) (T, error)
	cleanup func(T) // releases v of a call given up on; nil: nothing to release
	v       T
	err     error
}

func (p *pendingCall[T]) run() { p.v, p.err = p.f(p.ctx) }

func (p *pendingCall[T]) abandoned() {
	if p.cleanup != nil && p.err == nil {
		p.cleanup(p.v)
	}
}
