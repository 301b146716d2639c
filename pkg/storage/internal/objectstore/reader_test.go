package objectstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// body is a store's response body that hands out at most what each Read
// asks for, and records how much was asked.
type body struct {
	r      io.Reader
	asked  []int
	closed bool
}

func (b *body) Read(p []byte) (int, error) {
	b.asked = append(b.asked, len(p))
	return b.r.Read(p)
}

func (b *body) Close() error { b.closed = true; return nil }

func content(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i % 251)
	}
	return p
}

func noMap(err error) error { return err }

// TestReaderReadsGrowTo4MiB: a stream is read from the store in reads
// that start at 64 KiB and double up to 4 MiB, whatever size its reader
// asks for, and arrives intact.
func TestReaderReadsGrowTo4MiB(t *testing.T) {
	want := content(20<<20 + 123)
	b := &body{r: bytes.NewReader(want)}
	r := newReader(b, noMap)
	var got bytes.Buffer
	buf := make([]byte, 32<<10) // net/http's copy buffer
	if _, err := io.CopyBuffer(&got, struct{ io.Reader }{r}, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("read %d bytes that differ from the %d in the store", got.Len(), len(want))
	}
	wantAsked := []int{64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 4 << 20}
	if len(b.asked) < len(wantAsked) {
		t.Fatalf("the store was read %d times (%v), want more than %d", len(b.asked), b.asked, len(wantAsked))
	}
	for i, n := range wantAsked {
		if b.asked[i] != n {
			t.Fatalf("read %d from the store asked for %d bytes, want %d (all: %v)", i, b.asked[i], n, b.asked[:len(wantAsked)])
		}
	}
	if err := r.Close(); err != nil || !b.closed {
		t.Errorf("Close = %v, body closed %v", err, b.closed)
	}
	if _, err := r.Read(buf); err == nil {
		t.Error("Read after Close succeeded")
	}
}

// TestReaderShortRangeReadsLittle: a reader that wants 10 KiB of a long
// stream (a ranged read, the stream open-ended) takes one 64 KiB read from
// the store, not megabytes.
func TestReaderShortRangeReadsLittle(t *testing.T) {
	want := content(8 << 20)
	b := &body{r: bytes.NewReader(want)}
	r := newReader(b, noMap)
	got, err := io.ReadAll(io.LimitReader(r, 10<<10))
	if err != nil || !bytes.Equal(got, want[:10<<10]) {
		t.Fatalf("read %d bytes (%v), want the first 10 KiB", len(got), err)
	}
	if len(b.asked) != 1 || b.asked[0] != firstRead {
		t.Errorf("the store was asked for %v, want one read of %d", b.asked, firstRead)
	}
	r.Close()
}

// TestReaderLargeReadsGoStraightThrough: a caller asking for more than
// the next read's size gets the store's bytes without a copy through the
// buffer, and intact either way; iotest checks the io.Reader contract.
func TestReaderLargeReadsGoStraightThrough(t *testing.T) {
	want := content(2<<20 + 7)
	b := &body{r: bytes.NewReader(want)}
	r := newReader(b, noMap)
	if _, err := r.Read(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if r.buf != nil {
		t.Error("a 1 MiB read went through the buffer")
	}
	r.Close()
	// Past the first reads' sizes (64, 128, 256 KiB), small enough for
	// one-byte reads.
	want = want[:600<<10+7]
	for _, tc := range []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte at a time", iotest.OneByteReader},
		{"half of what is asked", iotest.HalfReader},
		{"data with EOF", iotest.DataErrReader},
	} {
		r := newReader(&body{r: tc.wrap(bytes.NewReader(want))}, noMap)
		if err := iotest.TestReader(r, want); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		r.Close()
	}
}

// TestReaderErrors: a store error mid-stream reaches the caller mapped,
// after the bytes read before it, and again at every later Read; empty
// tells an empty stream from one that has data or fails.
func TestReaderErrors(t *testing.T) {
	broken := errors.New("connection reset")
	mapped := errors.New("mapped")
	mapErr := func(err error) error {
		if !errors.Is(err, broken) {
			t.Errorf("mapErr(%v), want the store's error", err)
		}
		return mapped
	}
	want := content(100 << 10)
	r := newReader(&body{r: io.MultiReader(bytes.NewReader(want), iotest.ErrReader(broken))}, mapErr)
	got, err := io.ReadAll(r)
	if !errors.Is(err, mapped) || !bytes.Equal(got, want) {
		t.Errorf("ReadAll = %d bytes, %v; want %d bytes, then the mapped error", len(got), err, len(want))
	}
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, mapped) {
		t.Errorf("Read after the error = %v, want it again", err)
	}
	r.Close()

	for _, tc := range []struct {
		name  string
		body  io.Reader
		empty bool
	}{
		{"empty", bytes.NewReader(nil), true},
		{"data", bytes.NewReader([]byte("x")), false},
		{"broken", iotest.ErrReader(broken), false},
	} {
		r := newReader(&body{r: tc.body}, mapErr)
		if got := r.empty(); got != tc.empty {
			t.Errorf("%s stream: empty() = %v", tc.name, got)
		}
		r.Close()
	}
}

// stalled is a body whose Read waits until it is closed, as an HTTP body
// from a store that stopped sending does.
type stalled struct {
	first  bool
	closed chan struct{}
}

func (s *stalled) Read(p []byte) (int, error) {
	if !s.first {
		s.first = true
		return copy(p, "abc"), nil
	}
	<-s.closed
	return 0, errors.New("read on closed body")
}

func (s *stalled) Close() error {
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	return nil
}

// TestReaderCloseEndsAStalledRead: a Close from another goroutine ends a
// Read waiting on the store (the race detector checks that the buffer is
// not handed back to the pool under it).
func TestReaderCloseEndsAStalledRead(t *testing.T) {
	r := newReader(&stalled{closed: make(chan struct{})}, noMap)
	buf := make([]byte, 10)
	if n, err := r.Read(buf); n != 3 || err != nil {
		t.Fatalf("first Read = %d, %v; want the 3 bytes sent", n, err)
	}
	done := make(chan error)
	go func() {
		_, err := r.Read(buf)
		done <- err
	}()
	if err := r.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := <-done; err == nil {
		t.Error("the stalled Read returned no error after Close")
	}
	if _, err := r.Read(buf); !errors.Is(err, errReadAfterClose) {
		t.Errorf("Read after Close = %v, want %v", err, errReadAfterClose)
	}
}

// writes records the size of each Write.
type writes struct {
	bytes.Buffer
	sizes []int
}

func (w *writes) Write(p []byte) (int, error) {
	w.sizes = append(w.sizes, len(p))
	return w.Buffer.Write(p)
}

// TestReaderWritesItselfOutInItsReads: io.Copy of a stream (as the origin
// copies a blob to its client) writes the store's reads whole, up to 4
// MiB each, not 32 KiB at a time; what a Read took first is not written
// again, and a store's error mid-stream ends the copy, mapped.
func TestReaderWritesItselfOutInItsReads(t *testing.T) {
	want := content(20<<20 + 123)
	r := newReader(&body{r: bytes.NewReader(want)}, noMap)
	first := make([]byte, 1000)
	if _, err := io.ReadFull(r, first); err != nil {
		t.Fatal(err)
	}
	var w writes
	n, err := io.Copy(&w, r)
	if err != nil || n != int64(len(want)-1000) {
		t.Fatalf("io.Copy = %d, %v; want %d, nil", n, err, len(want)-1000)
	}
	if !bytes.Equal(append(first, w.Bytes()...), want) {
		t.Fatal("the stream written out differs from the object")
	}
	if len(w.sizes) > 12 {
		t.Errorf("%d MiB written in %d writes (%v); want the reads' sizes, up to 4 MiB each", len(want)>>20, len(w.sizes), w.sizes[:12])
	}

	boom := errors.New("connection reset")
	r = newReader(&body{r: io.MultiReader(bytes.NewReader(want[:5<<20]), iotest.ErrReader(boom))},
		func(err error) error { return fmt.Errorf("s3 read: %w", err) })
	w = writes{}
	n, err = io.Copy(&w, r)
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "s3 read:") || n != 5<<20 {
		t.Errorf("io.Copy of a stream failing after 5 MiB = %d, %v; want 5 MiB and the mapped error", n, err)
	}
}
