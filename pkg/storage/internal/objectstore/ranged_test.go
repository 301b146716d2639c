package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// fakeStore is an object store of one object that serves ranged GETs and
// records them.
type fakeStore struct {
	mu      sync.Mutex
	data    []byte
	version int // 0: deleted
	gets    []string
	// fail, keyed by a GET's offset, is its error; short makes its body
	// end after that many bytes.
	fail  map[int64]error
	short map[int64]int
	// block makes every GET after the first wait until its context ends,
	// telling started of it first.
	block   bool
	started chan int64
}

func newFakeStore(data []byte) *fakeStore {
	return &fakeStore{data: data, version: 1, fail: map[int64]error{}, short: map[int64]int{}, started: make(chan int64, 100)}
}

func (s *fakeStore) OpenRange(ctx context.Context, p string, off, n int64, version string) (io.ReadCloser, Object, error) {
	s.mu.Lock()
	s.gets = append(s.gets, fmt.Sprintf("%d+%d", off, n))
	first := len(s.gets) == 1
	data, cur, err, short := s.data, s.version, s.fail[off], s.short[off]
	block := s.block
	s.mu.Unlock()
	if block && !first {
		s.started <- off
		<-ctx.Done()
		return nil, Object{}, ctx.Err()
	}
	if err != nil {
		return nil, Object{}, err
	}
	if version != "" && version != strconv.Itoa(cur) || cur == 0 {
		return nil, Object{}, ErrObjectChanged
	}
	if off >= int64(len(data)) {
		return nil, Object{}, ErrRangeNotSatisfiable
	}
	b := data[off:min(off+n, int64(len(data)))]
	if short > 0 {
		b = b[:short]
	}
	return io.NopCloser(bytes.NewReader(b)), Object{Size: int64(len(data)), Version: strconv.Itoa(cur)}, nil
}

// sameSet reports whether a and b hold the same strings: ranges in flight
// at once reach the store in any order.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func (s *fakeStore) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.gets...)
}

// countingBuffers is a pool that counts what is out of it.
type countingBuffers struct {
	mu   sync.Mutex
	size int
	out  int
}

func (c *countingBuffers) get() *[]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out++
	b := make([]byte, c.size)
	return &b
}

func (c *countingBuffers) put(*[]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out--
}

func (c *countingBuffers) outstanding() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out
}

// openRanged opens a ranged read of s's object from off, as Driver.Reader
// does, with ranges of 1000 bytes, 3 in flight.
func openRanged(t *testing.T, s *fakeStore, off int64) (*ranged, *countingBuffers) {
	t.Helper()
	d := Wrap(nil, Options{Name: "fake", Ranges: s, Reads: Reads{RangeSize: 1000, InFlight: 3}})
	rc, err := d.Reader(context.Background(), "/blob", off)
	if err != nil {
		t.Fatalf("Reader at %d: %v", off, err)
	}
	r := rc.(*ranged)
	bufs := &countingBuffers{size: 1000}
	r.bufs = bufs
	return r, bufs
}

// TestRangedReadsInOrder: a read of the whole object, and from offsets in
// the middle of a range, returns the object's bytes in order through ranges
// of the configured size, the last one short, each pinned to the version
// the first GET saw; every buffer goes back to the pool.
func TestRangedReadsInOrder(t *testing.T) {
	want := content(10_345)
	for _, off := range []int64{0, 1, 999, 1234, 7_999} {
		s := newFakeStore(want)
		r, bufs := openRanged(t, s, off)
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want[off:]) {
			t.Fatalf("from %d: read %d bytes (%v), want the %d of the object from there", off, len(got), err, len(want)-int(off))
		}
		// The first GET asks for two ranges' worth; the rest follow in
		// ranges of 1000 from where it ends.
		wantGets := []string{fmt.Sprintf("%d+2000", off)}
		for o := off + 2000; o < int64(len(want)); o += 1000 {
			wantGets = append(wantGets, fmt.Sprintf("%d+%d", o, min(1000, int64(len(want))-o)))
		}
		if got := s.requests(); !sameSet(got, wantGets) || got[0] != wantGets[0] {
			t.Errorf("from %d: GETs %v, want %v", off, got, wantGets)
		}
		if err := r.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		if n := bufs.outstanding(); n != 0 {
			t.Errorf("from %d: %d buffers not back in the pool", off, n)
		}
	}

	// iotest checks the io.Reader contract through odd read sizes.
	s := newFakeStore(want)
	r, _ := openRanged(t, s, 0)
	if err := iotest.TestReader(r, want); err != nil {
		t.Error(err)
	}
	r.Close()
}

// TestRangedShortReadIsOneGET: a caller that reads less than one range
// (a P2P piece, a manifest) makes one GET, however large the object.
func TestRangedShortReadIsOneGET(t *testing.T) {
	want := content(100_000)
	s := newFakeStore(want)
	r, _ := openRanged(t, s, 5000)
	got, err := io.ReadAll(io.LimitReader(r, 999))
	if err != nil || !bytes.Equal(got, want[5000:5999]) {
		t.Fatalf("read %d bytes (%v), want 999 from 5000", len(got), err)
	}
	r.Close()
	if got := s.requests(); len(got) != 1 {
		t.Errorf("GETs %v, want one", got)
	}
}

// TestRangedErrorsAtTheirByte: a range that fails, or comes back short,
// is an error after exactly the bytes of the ranges before it (a short
// range's own bytes are not handed out), never a short stream ending in
// EOF, and stays the answer.
func TestRangedErrorsAtTheirByte(t *testing.T) {
	want := content(10_000)
	broken := errors.New("connection reset")
	for _, tc := range []struct {
		name    string
		set     func(s *fakeStore)
		at      int
		wantErr error
	}{
		{"a later range fails", func(s *fakeStore) { s.fail[5000] = broken }, 5000, broken},
		{"the last range fails", func(s *fakeStore) { s.fail[9000] = broken }, 9000, broken},
		{"a range comes back short", func(s *fakeStore) { s.short[4000] = 10 }, 4000, io.ErrUnexpectedEOF},
		{"the first GET comes back short", func(s *fakeStore) { s.short[0] = 1500 }, 1500, io.ErrUnexpectedEOF},
	} {
		s := newFakeStore(want)
		tc.set(s)
		r, bufs := openRanged(t, s, 0)
		got, err := io.ReadAll(r)
		if !errors.Is(err, tc.wantErr) || !bytes.Equal(got, want[:tc.at]) {
			t.Errorf("%s: read %d bytes, then %v; want %d bytes, then %v", tc.name, len(got), err, tc.at, tc.wantErr)
		}
		if _, err2 := r.Read(make([]byte, 10)); !errors.Is(err2, tc.wantErr) {
			t.Errorf("%s: Read after the error = %v, want it again", tc.name, err2)
		}
		r.Close()
		if n := bufs.outstanding(); n != 0 {
			t.Errorf("%s: %d buffers not back in the pool", tc.name, n)
		}
	}
}

// TestRangedObjectChanged: an object replaced or deleted after the first
// GET is an error where the first byte of the new one would be (the first
// range after the first GET's bytes, when it changes before the caller has
// read far enough for ranges to start), not its bytes; a store without
// versions is caught by the size.
func TestRangedObjectChanged(t *testing.T) {
	want := content(10_000)
	for _, tc := range []struct {
		name        string
		change      func(s *fakeStore)
		versionless bool
	}{
		{"replaced", func(s *fakeStore) { s.version++ }, false},
		{"deleted", func(s *fakeStore) { s.version = 0 }, false},
		{"replaced by a longer object on a store without versions", func(s *fakeStore) {
			s.data = content(20_000)
		}, true},
	} {
		s := newFakeStore(want)
		r, _ := openRanged(t, s, 0)
		if tc.versionless {
			r.open = func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
				rc, o, err := s.OpenRange(ctx, "/blob", off, n, "")
				if err == nil && o.Size != r.size {
					rc.Close()
					err = ErrObjectChanged
				}
				return rc, err
			}
		}
		head := make([]byte, 500) // within the first GET, before any range
		if _, err := io.ReadFull(r, head); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		tc.change(s)
		s.mu.Unlock()
		rest, err := io.ReadAll(r)
		if !errors.Is(err, ErrObjectChanged) || !bytes.Equal(rest, want[500:2000]) {
			t.Errorf("%s: read %d more bytes, then %v; want the first GET's other 1500, then %v", tc.name, len(rest), err, ErrObjectChanged)
		}
		r.Close()
	}
}

// TestRangedCloseCancelsRangesInFlight: Close while ranges are in flight
// (their GETs waiting on the store) cancels them, waits for them, and puts
// every buffer back; a Read waiting on one of them returns an error.
func TestRangedCloseCancelsRangesInFlight(t *testing.T) {
	s := newFakeStore(content(100_000))
	s.block = true
	r, bufs := openRanged(t, s, 0)
	if _, err := io.ReadFull(r, make([]byte, 2000)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		<-s.started
	}
	done := make(chan error)
	go func() {
		_, err := r.Read(make([]byte, 10))
		done <- err
	}()
	if err := r.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := <-done; err == nil {
		t.Error("a Read waiting on a range returned no error after Close")
	}
	if n := bufs.outstanding(); n != 0 {
		t.Errorf("%d buffers not back in the pool after Close", n)
	}
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, errReadAfterClose) {
		t.Errorf("Read after Close = %v, want %v", err, errReadAfterClose)
	}
}

// TestObjectFromContentRange: the size comes from a ranged answer's
// Content-Range; an answer from another offset is an error.
func TestObjectFromContentRange(t *testing.T) {
	for _, tc := range []struct {
		off    int64
		cr     string
		length int64
		size   int64
		ok     bool
	}{
		{0, "bytes 0-99/1000", 100, 1000, true},
		{500, "bytes 500-999/1000", 500, 1000, true},
		{0, "", 42, 42, true},
		{5, "", 42, 0, false},              // the whole object for a ranged read
		{5, "bytes 0-41/42", 42, 0, false}, // from the wrong offset
		{0, "bytes */1000", 0, 0, false},
		{0, "bytes 0-1/x", 0, 0, false},
		{1000, "bytes 1000-999/1000", 0, 0, false}, // at the end

	} {
		o, err := ObjectFromContentRange(tc.off, tc.cr, tc.length, "v")
		if (err == nil) != tc.ok || (tc.ok && (o.Size != tc.size || o.Version != "v")) {
			t.Errorf("ObjectFromContentRange(%d, %q, %d) = %+v, %v", tc.off, tc.cr, tc.length, o, err)
		}
	}
}

// TestRangedReaderAtTheEnd: at and past the end, where a ranged GET is
// not satisfiable, the one-GET path through the wrapped driver answers:
// empty at the size, InvalidOffsetError past it; a negative offset is an
// InvalidOffsetError without a request.
func TestRangedReaderAtTheEnd(t *testing.T) {
	ctx := context.Background()
	want := content(3000)
	inner := inmemory.New()
	if err := inner.PutContent(ctx, "/blob", want); err != nil {
		t.Fatal(err)
	}
	s := newFakeStore(want)
	d := Wrap(inner, Options{Name: "fake", Ranges: s, Reads: Reads{RangeSize: 1000, InFlight: 3}})
	r, err := d.Reader(ctx, "/blob", 3000)
	if err != nil {
		t.Fatalf("Reader at the size: %v", err)
	}
	if b, err := io.ReadAll(r); len(b) != 0 || err != nil {
		t.Errorf("Reader at the size read %d bytes, %v; want none", len(b), err)
	}
	r.Close()
	var invalid storage.InvalidOffsetError
	for _, off := range []int64{3001, -1} {
		if _, err := d.Reader(ctx, "/blob", off); !errors.As(err, &invalid) {
			t.Errorf("Reader at %d = %v, want an InvalidOffsetError", off, err)
		}
	}
	if got := s.requests(); len(got) != 2 {
		t.Errorf("ranged GETs %v, want the two at and past the end", got)
	}
}

// TestReadsParse: the URL parameters set Reads within bounds; readRanges=0
// is one streaming GET; others are left to the driver.
func TestReadsParse(t *testing.T) {
	var r Reads
	for _, kv := range [][2]string{{"readRangeSize", "16777216"}, {"readRanges", "2"}} {
		if ok, err := r.Parse(kv[0], kv[1]); !ok || err != nil {
			t.Errorf("Parse(%s=%s) = %v, %v", kv[0], kv[1], ok, err)
		}
	}
	if r != (Reads{RangeSize: 16 << 20, InFlight: 2}) {
		t.Errorf("Reads = %+v", r)
	}
	if _, err := r.Parse("readRanges", "0"); err != nil || r.InFlight != 0 {
		t.Errorf("readRanges=0: %+v, %v; want InFlight 0", r, err)
	}
	// Off by default: one GET through the wrapped driver.
	inner := inmemory.New()
	if err := inner.PutContent(context.Background(), "/blob", content(5000)); err != nil {
		t.Fatal(err)
	}
	s := newFakeStore(content(5000))
	rc, err := Wrap(inner, Options{Name: "fake", Ranges: s}).Reader(context.Background(), "/blob", 0)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, ok := rc.(*ranged); ok || len(s.requests()) != 0 {
		t.Errorf("without readRanges a Reader made ranged GETs %v", s.requests())
	}
	for _, kv := range [][2]string{{"readRangeSize", "1000"}, {"readRangeSize", "x"}, {"readRanges", "17"}, {"readRanges", "-1"}} {
		if ok, err := r.Parse(kv[0], kv[1]); !ok || err == nil {
			t.Errorf("Parse(%s=%s) = %v, %v; want an error", kv[0], kv[1], ok, err)
		}
	}
	if ok, _ := r.Parse("region", "x"); ok {
		t.Error("Parse took region")
	}
}
