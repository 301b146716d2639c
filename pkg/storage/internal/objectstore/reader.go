package objectstore

import (
	"errors"
	"io"
	"sync"
)

// A store's answer to a read is an HTTP response body, which the origin
// copies to its client 32 KiB at a time (net/http's copy buffer). Read in
// 32 KiB pieces, the body costs a system call, and often a wait on the
// network poller, per piece: a large blob's pull costs far more CPU than
// read through a large buffer, as registry:2 reads it (its blob reader's
// bufio.Reader). docs/storage.md has the measurements.
//
// reader reads the body in reads that start at firstRead and double up to
// maxRead, so that a short ranged read (a P2P piece, a manifest) does not
// pull megabytes it will not use out of the connection, while a whole
// blob's stream is soon read 4 MiB at a time. Buffers are pooled.
const (
	firstRead = 64 << 10
	maxRead   = 4 << 20
)

var readBuffers = sync.Pool{New: func() any { b := make([]byte, maxRead); return &b }}

var errReadAfterClose = errors.New("read after Close")

// A Close may come from another goroutine while a Read waits on the store
// (an HTTP body allows that, to cut a stalled read): mu keeps the buffer
// from going back to the pool while a Read still uses it.
type reader struct {
	rc     io.ReadCloser
	mapErr func(error) error // names the driver, the store and the path

	mu sync.Mutex

	buf    *[]byte // from readBuffers while data may be buffered
	r, w   int     // (*buf)[r:w] is read from rc, not yet returned
	next   int     // the size of the next read from rc
	err    error   // what rc returned, for every Read once buf is drained
	closed bool
}

func newReader(rc io.ReadCloser, mapErr func(error) error) *reader {
	return &reader{rc: rc, mapErr: mapErr, next: firstRead}
}

func (r *reader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errReadAfterClose
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.r == r.w {
		if r.err != nil {
			return 0, r.mapped(r.err)
		}
		if len(p) >= r.next {
			// As large as the next read would be: straight into p.
			n, err := r.rc.Read(p)
			r.grow()
			return n, r.mapped(err)
		}
		r.fill()
		if r.r == r.w {
			return 0, r.mapped(r.err) // nil after a read of nothing, as io.Reader allows
		}
	}
	n := copy(p, (*r.buf)[r.r:r.w])
	r.r += n
	return n, nil
}

// WriteTo writes the rest of the stream to w from the reads' own buffers,
// up to maxRead bytes a write: a blob copied to an HTTP response goes out
// in that many socket writes, where io.Copy through a 32 KiB buffer (what
// net/http's copy uses for a source that is not a file) makes up to 128
// times as many, each a system call, and copies every byte once more.
func (r *reader) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var total int64
	for {
		if r.closed {
			return total, errReadAfterClose
		}
		if r.r == r.w {
			if r.err != nil {
				if r.err == io.EOF {
					return total, nil
				}
				return total, r.mapped(r.err)
			}
			r.fill()
			continue
		}
		n, err := w.Write((*r.buf)[r.r:r.w])
		r.r += n
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// fill reads once from rc into the buffer, which must be drained.
func (r *reader) fill() {
	if r.buf == nil {
		r.buf = readBuffers.Get().(*[]byte)
	}
	n, err := r.rc.Read((*r.buf)[:r.next])
	r.r, r.w, r.err = 0, n, err
	r.grow()
}

func (r *reader) grow() { r.next = min(2*r.next, maxRead) }

// empty reports whether the stream ends before its first byte; an error
// other than its end counts as not empty, for the first Read to report.
func (r *reader) empty() bool {
	// As io.ReadAtLeast, a reader that returns nothing 100 times over
	// is given up on.
	for range 100 {
		if r.r < r.w || r.err != nil {
			break
		}
		r.fill()
	}
	if r.r == r.w && r.err == nil {
		r.err = io.ErrNoProgress
	}
	return r.r == r.w && r.err == io.EOF
}

func (r *reader) mapped(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	return r.mapErr(err)
}

func (r *reader) Close() error {
	// Closed first, outside mu: that ends a Read waiting on the store,
	// which holds mu.
	err := r.rc.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.buf != nil {
		readBuffers.Put(r.buf)
		r.buf, r.r, r.w = nil, 0, 0
	}
	return err
}
