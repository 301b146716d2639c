package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// guardedDriver is the driver the registry API uses. While storage is out,
// its calls fail at once (a circuit breaker) instead of each request
// waiting on a dead backend and piling up; a metadata call that gets no
// answer within Config.StorageTimeout is given up as an outage. Once
// storage answers again, calls go through again: no restart needed.
//
// Reads and writes are tracked apart, so that a disk that turned read-only
// still serves pulls while pushes fail fast: a failed read means nothing
// works, a failed write only that writes do not.
//
// A call given up after the timeout is abandoned, not stopped: a driver
// that ignores its context (the local filesystem on a hung NFS mount) goes
// on in the background and may still complete. That is no worse than a
// client timing out on any remote store, and the registry layout is built
// for it: a blob appears by one Move of verified content, an upload's
// bytes count only once its state says so.
type guardedDriver struct {
	storage.Driver
	h       *storageHealth
	workers *storageWorkers // run the calls timed by h.timeout
}

func newGuardedDriver(d storage.Driver, h *storageHealth) *guardedDriver {
	return &guardedDriver{Driver: d, h: h, workers: newStorageWorkers(h.timeout)}
}

type opClass int

const (
	readOp opClass = iota
	writeOp
)

func (c opClass) String() string {
	if c == writeOp {
		return "writes"
	}
	return "reads"
}

// storageProbeInterval is how often a call is let through to find out
// whether storage is back, while it is out.
const storageProbeInterval = time.Second

// storageHealth is the breaker's state.
type storageHealth struct {
	driver  string
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger
	metrics *metrics

	// out is down[readOp] || down[writeOp], read without mu: while storage
	// is up, which is nearly always, admit and record take no lock.
	out atomic.Bool

	mu      sync.Mutex
	down    [2]bool      // by opClass
	since   time.Time    // when storage went out
	lastErr error        // the failure that put it out
	lastTry [2]time.Time // last call let through while out, by opClass
}

// probeKey marks the context of a readiness probe, which is always let
// through.
type probeKey struct{}

func withProbe(ctx context.Context) context.Context { return context.WithValue(ctx, probeKey{}, true) }

// admit decides whether a call of class c may go to storage.
func (h *storageHealth) admit(ctx context.Context, c opClass) error {
	if !h.out.Load() {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.down[readOp] && !(c == writeOp && h.down[writeOp]) {
		return nil
	}
	if ctx.Value(probeKey{}) != nil {
		return nil
	}
	if now := h.now(); now.Sub(h.lastTry[c]) >= storageProbeInterval {
		h.lastTry[c] = now // this call finds out whether storage is back
		return nil
	}
	h.metrics.storageRefusals.Inc()
	return fmt.Errorf("storage %s has been failing since %s (%v); not tried again yet: %w",
		h.driver, h.since.Format(time.RFC3339), h.lastErr, storage.ErrUnavailable)
}

// record notes how a call of class c that reached storage ended. Any
// answer to a read, a missing path included, shows that reads work; only
// a write that did its work shows that writes do (a delete of a path that
// is not there proves nothing: a storage directory gone looks like that).
func (h *storageHealth) record(c opClass, err error) {
	if errors.Is(err, context.Canceled) {
		return // the caller gave up: no answer either way
	}
	if err != nil && isOutage(err) {
		h.trip(c, err)
		return
	}
	if err != nil && c == writeOp {
		return
	}
	if !h.out.Load() {
		return // nothing to bring back (a trip racing this answer wins)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	was := h.down
	h.down[c] = false
	if c == writeOp {
		h.down[readOp] = false // a write that went through needs reads too
	}
	h.out.Store(h.down[readOp] || h.down[writeOp])
	if was != h.down && !h.down[readOp] && !h.down[writeOp] {
		h.log.Info("storage is back", "driver", h.driver, "outFor", h.now().Sub(h.since).String())
		h.metrics.storageUp.Set(1)
	}
}

func (h *storageHealth) trip(c opClass, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.down[readOp] && !h.down[writeOp] {
		h.since = h.now()
		h.log.Error("storage is failing: answering 503 until it is back", "driver", h.driver, "class", c.String(), "err", err)
		h.metrics.storageUp.Set(0)
	}
	h.down[c] = true
	h.out.Store(true)
	h.lastErr = err
	// The next call to find out whether storage is back comes a probe
	// interval after this failure.
	h.lastTry = [2]time.Time{h.now(), h.now()}
}

// state says whether storage is out, and why.
func (h *storageHealth) state() (writesDown bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down[readOp] || h.down[writeOp] {
		what := "reads and writes"
		if !h.down[readOp] {
			what = "writes"
		}
		return h.down[writeOp], fmt.Errorf("%s failing since %s: %w", what, h.since.Format(time.RFC3339), h.lastErr)
	}
	return false, nil
}

// isOutage tells a failure of the storage itself (unreachable, timing out,
// a medium that cannot be written) from an answer about a path.
func isOutage(err error) bool {
	switch {
	case errors.Is(err, storage.ErrUnavailable),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.EIO),
		errors.Is(err, syscall.EROFS),
		errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EDQUOT),
		errors.Is(err, syscall.ESTALE),
		errors.Is(err, syscall.ENOTCONN),
		errors.Is(err, syscall.ENOTDIR),
		errors.Is(err, syscall.EACCES),
		errors.Is(err, syscall.EPERM):
		return true
	}
	return false
}

// outage returns err marked as a storage outage when it is one, so that the
// API answers 503 naming storage.
func (g *guardedDriver) outage(err error) error {
	if err == nil || errors.Is(err, storage.ErrUnavailable) || !isOutage(err) {
		return err
	}
	return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
}

// guarded runs f against storage under the breaker. Calls are given up
// after the timeout (up to a sixteenth of it sooner). Under a context with
// a stallAnswer, f runs on the calling goroutine and the watchdog answers
// the request when it stalls (the call returns errAnswered once it is
// done). Otherwise f runs on one of the driver's workers while the
// request waits for it, its context to be
// done or the timeout, whichever comes first (the watchdog that ends the
// wait looks at the context once a sixteenth of the timeout, so a request
// whose client went away returns up to that much later). A request's
// context is cancelled once the request is answered, which stops a call
// given up on in a driver that heeds its context; a context that is never
// cancelled (work that outlives its request) gets the timeout as its
// deadline for metadata calls, while the opening of a stream does not
// (some drivers tie the stream to the context it was opened with).
// cleanup releases what an abandoned call returns when it completes after
// all.
func guarded[T any](g *guardedDriver, ctx context.Context, c opClass, op, path string, meta bool, cleanup func(T), f func(context.Context) (T, error)) (T, error) {
	var zero T
	if err := g.h.admit(ctx, c); err != nil {
		return zero, err
	}
	if g.h.timeout <= 0 {
		v, err := f(ctx)
		g.h.record(c, err)
		return v, g.outage(err)
	}
	p := &pendingCall[T]{callState: callState{ctx: ctx}, fctx: ctx, f: f, cleanup: cleanup}
	if a, ok := ctx.Value(stallAnswerKey{}).(stallAnswer); ok {
		p.answer, p.guard, p.class, p.op, p.path = a, g, c, op, path
		if g.workers.runInline(p) == callExpired {
			return zero, errAnswered
		}
		if p.err != nil && ctx.Err() != nil {
			return zero, p.err // the client went away: not storage's fault
		}
		g.h.record(c, p.err)
		return p.v, g.outage(p.err)
	}
	if meta && ctx.Done() == nil {
		var cancel context.CancelFunc
		p.fctx, cancel = context.WithTimeout(ctx, g.h.timeout)
		defer cancel()
	}
	switch g.workers.run(p) {
	case callDone:
		if p.err != nil && ctx.Err() != nil {
			return zero, p.err // the client went away: not storage's fault
		}
		g.h.record(c, p.err)
		return p.v, g.outage(p.err)
	case callCancelled:
		return zero, ctx.Err()
	default: // callExpired
		return zero, g.timedOut(c, op, path)
	}
}

// timedOut notes that a call of class c got no answer within the timeout,
// and returns the error that says so.
func (g *guardedDriver) timedOut(c opClass, op, path string) error {
	g.h.metrics.storageTimeouts.WithLabelValues(op).Inc()
	err := fmt.Errorf("storage %s: %s %s: no answer within %s (storageTimeout): %w", g.Name(), op, path, g.h.timeout, storage.ErrUnavailable)
	g.h.trip(c, err)
	return err
}

type none struct{}

func (g *guardedDriver) GetContent(ctx context.Context, path string) ([]byte, error) {
	return guarded(g, ctx, readOp, "get_content", path, true, nil, func(ctx context.Context) ([]byte, error) {
		return g.Driver.GetContent(ctx, path)
	})
}

func (g *guardedDriver) PutContent(ctx context.Context, path string, content []byte) error {
	_, err := guarded(g, ctx, writeOp, "put_content", path, true, nil, func(ctx context.Context) (none, error) {
		return none{}, g.Driver.PutContent(ctx, path, content)
	})
	return err
}

func (g *guardedDriver) Stat(ctx context.Context, path string) (storage.FileInfo, error) {
	return guarded(g, ctx, readOp, "stat", path, true, nil, func(ctx context.Context) (storage.FileInfo, error) {
		return g.Driver.Stat(ctx, path)
	})
}

func (g *guardedDriver) List(ctx context.Context, path string) ([]string, error) {
	return guarded(g, ctx, readOp, "list", path, true, nil, func(ctx context.Context) ([]string, error) {
		return g.Driver.List(ctx, path)
	})
}

func (g *guardedDriver) Delete(ctx context.Context, path string) error {
	_, err := guarded(g, ctx, writeOp, "delete", path, true, nil, func(ctx context.Context) (none, error) {
		return none{}, g.Driver.Delete(ctx, path)
	})
	return err
}

// Move is not timed: on object stores it copies the whole blob, which
// takes as long as the blob is large. It still fails fast while storage
// is out.
func (g *guardedDriver) Move(ctx context.Context, src, dst string) error {
	if err := g.h.admit(ctx, writeOp); err != nil {
		return err
	}
	err := g.Driver.Move(ctx, src, dst)
	g.h.record(writeOp, err)
	return g.outage(err)
}

// Walk is not timed either: its callers bound it (the catalog's walk).
func (g *guardedDriver) Walk(ctx context.Context, path string, f storage.WalkFn, opts ...func(*storage.WalkOptions)) error {
	if err := g.h.admit(ctx, readOp); err != nil {
		return err
	}
	err := g.Driver.Walk(ctx, path, f, opts...)
	g.h.record(readOp, err)
	return g.outage(err)
}

func (g *guardedDriver) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	rc, err := guarded(g, ctx, readOp, "reader", path, false, func(rc io.ReadCloser) { rc.Close() },
		func(ctx context.Context) (io.ReadCloser, error) { return g.Driver.Reader(ctx, path, offset) })
	if err != nil {
		return nil, err
	}
	// Returned as it is, not wrapped: a blob streamed from a file goes
	// out with sendfile only while the response sees the *os.File. Its
	// read errors do not feed the breaker; the calls before it do.
	return rc, nil
}

func (g *guardedDriver) Writer(ctx context.Context, path string, append bool) (storage.FileWriter, error) {
	return g.openWriter(ctx, path, func(ctx context.Context) (storage.FileWriter, error) { return g.Driver.Writer(ctx, path, append) })
}

// openWriter opens a writer of path with open under the guard, and
// reports its stream's failures to the breaker.
func (g *guardedDriver) openWriter(ctx context.Context, path string, open func(context.Context) (storage.FileWriter, error)) (storage.FileWriter, error) {
	fw, err := guarded(g, ctx, writeOp, "writer", path, false, func(fw storage.FileWriter) { _ = fw.Cancel(context.Background()) }, open)
	if err != nil {
		return nil, err
	}
	return &guardedWriter{FileWriter: fw, g: g}, nil
}

// guardedWriter reports the failures of an upload's stream to the breaker;
// it does not time its writes, whose pace is the client's as much as the
// storage's.
type guardedWriter struct {
	storage.FileWriter
	g *guardedDriver
}

func (w *guardedWriter) Write(p []byte) (int, error) {
	n, err := w.FileWriter.Write(p)
	if err != nil && isOutage(err) {
		w.g.h.trip(writeOp, err)
		return n, w.g.outage(err)
	}
	return n, err
}

func (w *guardedWriter) Commit(ctx context.Context) error {
	err := w.FileWriter.Commit(ctx)
	w.g.h.record(writeOp, err)
	return w.g.outage(err)
}
