package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// One streaming GET reads a blob no faster than one connection to the store
// carries it, which is how registry:2 reads too. The clouds' transfer
// managers read a large object with a few ranged GETs in flight at once, in
// order; so does a Reader here once its caller has shown that it reads far:
//
//   - the first GET asks for 2×RangeSize bytes from the offset, so a short
//     read (a P2P piece, a manifest, a ranged client read of a few MiB)
//     stays one GET;
//   - once the caller has read RangeSize bytes of it, and more of the object
//     is left than the first GET covers, up to InFlight GETs of
//     RangeSize bytes each are started for what follows, each read whole
//     into a pooled buffer by a goroutine of its own, and a finished range
//     makes room for the next;
//   - every later range is pinned to the version (ETag, generation) the
//     first GET saw, so an object replaced or deleted mid-read is an error
//     (ErrObjectChanged) at the first byte that would have come from the
//     new one, never a mix of the two;
//   - a range that fails or comes back short is an error at its first byte,
//     after every byte before it, and stays the answer of every later Read;
//   - Close cancels the ranges in flight and waits for them, so their
//     buffers are back in the pool when it returns.
//
// Memory: at most InFlight buffers of RangeSize per Reader, only while it
// reads a large object.
//
// Off by default (Reads.InFlight 0): on this project's test servers over
// loopback it did not make pulls reliably faster than one streaming GET,
// and cost the store and the origin more CPU (docs/storage.md), so a site
// turns it on with the storage URL's readRanges where its store serves one
// connection slower than several.
const DefaultRangeSize = 16 << 20

// Reads says how a Reader reads a large object: ranges of RangeSize bytes
// (default DefaultRangeSize), InFlight at once (default 0: one streaming
// GET through the wrapped driver). The storage URL's readRangeSize and
// readRanges set them.
type Reads struct {
	RangeSize int64
	InFlight  int
}

// ReadParams names the storage URL parameters Reads.Parse takes.
const ReadParams = "readRangeSize, readRanges"

// Parse sets r from the storage URL parameter key=v and reports whether key
// is one of r's: readRangeSize (bytes, at least 1 MiB, at most 256 MiB) and
// readRanges (ranges in flight, 0 to 16; 0, the default, reads with one
// streaming GET).
func (r *Reads) Parse(key, v string) (bool, error) {
	switch key {
	case "readRangeSize":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1<<20 || n > 256<<20 {
			return true, errors.New("want a size in bytes from 1048576 (1 MiB) to 268435456 (256 MiB)")
		}
		r.RangeSize = n
	case "readRanges":
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 16 {
			return true, errors.New("want 0 (one streaming GET) to 16 ranges in flight")
		}
		r.InFlight = n
	default:
		return false, nil
	}
	return true, nil
}

// ErrRangeNotSatisfiable is what a RangeOpener returns for an offset at or
// past the end of the object.
var ErrRangeNotSatisfiable = errors.New("range not satisfiable")

// ErrObjectChanged is what a RangeOpener returns when the object is no
// longer the version a read is pinned to (replaced or deleted).
var ErrObjectChanged = errors.New("the object changed or went away while it was read")

// Object is what a ranged GET tells of the object it reads.
type Object struct {
	// Size is the whole object's size.
	Size int64
	// Version is its ETag or generation, "" where the store has none;
	// the later ranges of a read are pinned to it.
	Version string
}

// RangeOpener reads byte ranges of objects, with the store's SDK beside
// the wrapped driver.
type RangeOpener interface {
	// OpenRange reads n > 0 bytes of the object at p from off (fewer where
	// the object ends sooner). With version != "" the store serves them
	// only from that version (If-Match, a generation) and otherwise the
	// error is ErrObjectChanged. At or past the end it returns
	// ErrRangeNotSatisfiable; a missing object is a PathNotFoundError.
	OpenRange(ctx context.Context, p string, off, n int64, version string) (io.ReadCloser, Object, error)
}

// RangeError is the error OpenRange returns for a GET of p (with If-Match:
// version, if set) that the store answered with HTTP status code and err:
// ErrRangeNotSatisfiable for 416, ErrObjectChanged for a pinned GET's 404
// or 412, a PathNotFoundError for an unpinned GET's 404, err otherwise.
func RangeError(p, driverName, version string, code int, err error) error {
	switch {
	case code == http.StatusRequestedRangeNotSatisfiable:
		return ErrRangeNotSatisfiable
	case version != "" && (code == http.StatusNotFound || code == http.StatusPreconditionFailed):
		return fmt.Errorf("%w: %w", ErrObjectChanged, err)
	case code == http.StatusNotFound:
		return storage.PathNotFoundError{Path: p, DriverName: driverName}
	}
	return err
}

// ObjectFromContentRange is the Object of a ranged GET's answer that started
// at off: its Content-Range header ("bytes 0-99/1000"), or, where the store
// answered without one (the whole object, off must be 0), its length.
func ObjectFromContentRange(off int64, contentRange string, length int64, version string) (Object, error) {
	if contentRange == "" {
		if off != 0 {
			return Object{}, fmt.Errorf("the store answered a read from offset %d with the whole object", off)
		}
		return Object{Size: length, Version: version}, nil
	}
	rng, total, ok := strings.Cut(strings.TrimPrefix(contentRange, "bytes "), "/")
	first, _, ok2 := strings.Cut(rng, "-")
	size, err := strconv.ParseInt(total, 10, 64)
	start, err2 := strconv.ParseInt(first, 10, 64)
	if !ok || !ok2 || err != nil || err2 != nil || size < 0 {
		return Object{}, fmt.Errorf("the store answered with Content-Range %q", contentRange)
	}
	if off > 0 && off >= size {
		// Azurite answers a read at the end with an empty range.
		return Object{}, ErrRangeNotSatisfiable
	}
	if start != off {
		return Object{}, fmt.Errorf("the store answered a read from offset %d with Content-Range %q", off, contentRange)
	}
	return Object{Size: size, Version: version}, nil
}

// rangeBuffers pools the buffers of one range size.
type rangeBuffers interface {
	get() *[]byte
	put(*[]byte)
}

type syncPool struct{ sync.Pool }

func (p *syncPool) get() *[]byte  { return p.Get().(*[]byte) }
func (p *syncPool) put(b *[]byte) { p.Put(b) }

var (
	poolsMu sync.Mutex
	pools   = map[int]*syncPool{}
)

// poolOf returns the process's pool of buffers of size bytes.
func poolOf(size int) rangeBuffers {
	poolsMu.Lock()
	defer poolsMu.Unlock()
	p := pools[size]
	if p == nil {
		p = &syncPool{sync.Pool{New: func() any { b := make([]byte, size); return &b }}}
		pools[size] = p
	}
	return p
}

// fetch is one range of a ranged read: [off, off+n), read whole into buf by
// a goroutine that closes done.
type fetch struct {
	off, n int64
	done   chan struct{}
	buf    *[]byte
	err    error
	read   int64 // what the caller has had of it
}

// ranged reads an object of size bytes from start: the first GET's answer
// (first, up to firstEnd), then ranges of rangeSize.
type ranged struct {
	cancel   context.CancelFunc // of ctx, which every GET of the read uses
	ctx      context.Context
	open     func(ctx context.Context, off, n int64) (io.ReadCloser, error) // pinned
	mapErr   func(error) error
	bufs     rangeBuffers
	size     int64
	start    int64
	inFlight int
	rangeLen int64

	mu       sync.Mutex
	first    *reader // nil once read to firstEnd
	firstEnd int64
	pos      int64    // the next byte the caller gets
	next     int64    // where the next range to start begins
	fetches  []*fetch // started, not yet handed out whole, in order
	err      error    // the answer of every Read from now on
	closed   bool
}

// readConfig is how a Reader reads: ranges of rangeSize, inFlight at once.
type readConfig struct {
	rangeSize int64
	inFlight  int
}

// newRanged reads an object whose first GET (from start, of obj) answered
// first, which it reads up to start+2×rangeSize. ctx is cancelled by Close.
func newRanged(ctx context.Context, cancel context.CancelFunc, first io.ReadCloser, start int64, obj Object, cfg readConfig,
	open func(ctx context.Context, off, n int64) (io.ReadCloser, error), mapErr func(error) error) *ranged {
	r := &ranged{
		ctx: ctx, cancel: cancel, open: open, mapErr: mapErr,
		size: obj.Size, start: start, inFlight: cfg.inFlight, rangeLen: cfg.rangeSize,
		first: newReader(first, mapErr), pos: start,
	}
	r.firstEnd = min(obj.Size, start+2*cfg.rangeSize)
	r.next = r.firstEnd
	if r.rangeLen > 0 {
		r.bufs = poolOf(int(r.rangeLen))
	}
	return r
}

func (r *ranged) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return 0, errReadAfterClose
	case r.err != nil:
		return 0, r.err
	case len(p) == 0:
		return 0, nil
	case r.pos >= r.size:
		return 0, io.EOF
	}
	if r.first != nil {
		return r.readFirst(p)
	}
	r.startRanges()
	f := r.fetches[0]
	<-f.done // Close cancels ctx, which ends the GET
	if f.err != nil {
		r.err = r.mapErr(fmt.Errorf("bytes %d-%d: %w", f.off, f.off+f.n-1, f.err))
		return 0, r.err
	}
	n := copy(p, (*f.buf)[f.read:f.n])
	f.read += int64(n)
	r.pos += int64(n)
	if f.read == f.n {
		r.bufs.put(f.buf)
		r.fetches = r.fetches[1:]
		r.startRanges()
	}
	return n, nil
}

// readFirst reads from the first GET's answer.
func (r *ranged) readFirst(p []byte) (int, error) {
	n, err := r.first.Read(p[:min(int64(len(p)), r.firstEnd-r.pos)])
	r.pos += int64(n)
	if r.pos-r.start >= r.rangeLen && r.firstEnd < r.size {
		r.startRanges() // the caller reads far: read ahead
	}
	switch {
	case r.pos == r.firstEnd:
		r.first.Close()
		r.first = nil
		if r.pos < r.size {
			err = nil
		}
	case err == io.EOF:
		// The first GET ended short of what it asked for.
		err = r.mapErr(fmt.Errorf("bytes %d-%d: %w", r.start, r.firstEnd-1, io.ErrUnexpectedEOF))
	}
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// startRanges starts ranges until inFlight are started and not yet handed
// out, or none is left.
func (r *ranged) startRanges() {
	for len(r.fetches) < r.inFlight && r.next < r.size {
		f := &fetch{off: r.next, n: min(r.rangeLen, r.size-r.next), done: make(chan struct{}), buf: r.bufs.get()}
		r.next += f.n
		r.fetches = append(r.fetches, f)
		go r.get(f)
	}
}

// get reads range f whole into its buffer.
func (r *ranged) get(f *fetch) {
	defer close(f.done)
	body, err := r.open(r.ctx, f.off, f.n)
	if err != nil {
		f.err = err
		return
	}
	defer body.Close()
	_, err = io.ReadFull(body, (*f.buf)[:f.n])
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // nothing of a range that must have bytes
	}
	f.err = err
}

func (r *ranged) Close() error {
	// Cancelled first, outside mu: that ends a Read waiting on the store,
	// which holds mu.
	r.cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var err error
	if r.first != nil {
		err = r.first.Close()
		r.first = nil
	}
	for _, f := range r.fetches {
		<-f.done
		r.bufs.put(f.buf)
	}
	r.fetches = nil
	if errors.Is(err, context.Canceled) {
		err = nil // ours
	}
	return err
}
