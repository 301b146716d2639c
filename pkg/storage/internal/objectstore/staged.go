package objectstore

import (
	"context"
	"sync"
)

// Parts is what a staged writer (storage.StagedWriter) asks of its store:
// the parts of an object sent one by one, a few at once, and made the
// object in one step at Commit, or a body of less than one part sent
// whole at Commit.
type Parts interface {
	// Start is called before the first part is sent (S3: the multipart
	// upload is created).
	Start(ctx context.Context) error
	// Part sends part num (from 1) with the bytes b, which it must not
	// keep. Parts are sent concurrently.
	Part(ctx context.Context, num int, b []byte) error
	// Complete makes parts 1..n the object.
	Complete(ctx context.Context, n int) error
	// PutWhole writes the object in one request, for a write that sent
	// no part.
	PutWhole(ctx context.Context, b []byte) error
	// Abort discards the parts sent, once none is in flight.
	Abort(ctx context.Context) error
}

// PartWriter is a staged writer that sends its bytes to a store in parts
// of a fixed size, up to inFlight at once: the store receives a part while
// the next one is filled, where the reference writers send one part at a
// time and take no bytes meanwhile. Its methods are called from one
// goroutine. Driver.OpenStaged gives it the end states and the error
// mapping.
type PartWriter struct {
	ctx      context.Context
	parts    Parts
	partSize int
	bufs     *sync.Pool
	inFlight chan struct{} // a token per part being sent
	wg       sync.WaitGroup

	buf     []byte // the part being filled
	size    int64
	started bool
	sent    int // parts sent
	done    bool

	mu  sync.Mutex
	err error // the first part's failure; guarded by mu
}

// NewPartWriter returns a writer sending parts of partSize bytes to parts,
// inFlight at once, under ctx.
func NewPartWriter(ctx context.Context, parts Parts, partSize, inFlight int) *PartWriter {
	p, _ := partBuffers.Load(partSize)
	if p == nil {
		p, _ = partBuffers.LoadOrStore(partSize, &sync.Pool{New: func() any { b := make([]byte, 0, partSize); return &b }})
	}
	return &PartWriter{ctx: ctx, parts: parts, partSize: partSize, bufs: p.(*sync.Pool), inFlight: make(chan struct{}, inFlight)}
}

// partBuffers holds part buffers, by size.
var partBuffers sync.Map // int -> *sync.Pool

func (w *PartWriter) partErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Wait waits for the parts in flight, as a process that stops after them
// (tests of a writer left behind).
func (w *PartWriter) Wait() { w.wg.Wait() }

func (w *PartWriter) Write(p []byte) (int, error) {
	if err := w.partErr(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = (*w.bufs.Get().(*[]byte))[:0]
		}
		k := min(len(p), w.partSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p, n = p[k:], n+k
		w.size += int64(k)
		if len(w.buf) == w.partSize {
			if err := w.send(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (w *PartWriter) Size() int64 { return w.size }

// send starts sending the buffer as the next part once fewer than
// inFlight are being sent.
func (w *PartWriter) send() error {
	if !w.started {
		if err := w.parts.Start(w.ctx); err != nil {
			return err
		}
		w.started = true
	}
	w.inFlight <- struct{}{}
	if err := w.partErr(); err != nil {
		<-w.inFlight
		return err
	}
	w.sent++
	num, buf := w.sent, w.buf
	w.buf = nil
	w.wg.Go(func() {
		defer func() { <-w.inFlight }()
		err := w.parts.Part(w.ctx, num, buf)
		w.bufs.Put(&buf)
		if err != nil {
			w.mu.Lock()
			if w.err == nil {
				w.err = err
			}
			w.mu.Unlock()
		}
	})
	return nil
}

// Commit sends what is left and makes the object, or discards the parts
// if that fails.
func (w *PartWriter) Commit(ctx context.Context) error {
	w.done = true
	if !w.started {
		err := w.parts.PutWhole(ctx, w.buf)
		w.release()
		return err
	}
	var err error
	if len(w.buf) > 0 {
		err = w.send()
	}
	w.wg.Wait()
	if err == nil {
		err = w.partErr()
	}
	if err == nil {
		err = w.parts.Complete(ctx, w.sent)
	}
	if err != nil {
		_ = w.parts.Abort(context.WithoutCancel(ctx))
	}
	return err
}

// Cancel discards what was written.
func (w *PartWriter) Cancel(ctx context.Context) error {
	if w.done {
		return nil
	}
	w.done = true
	w.release()
	if !w.started {
		return nil
	}
	w.wg.Wait()
	return w.parts.Abort(ctx)
}

// Close without Commit cancels: a staged write cannot be continued.
func (w *PartWriter) Close() error { return w.Cancel(context.WithoutCancel(w.ctx)) }

// release gives back the buffer being filled.
func (w *PartWriter) release() {
	if b := w.buf; b != nil {
		w.bufs.Put(&b)
		w.buf = nil
	}
}
