package piecewire

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// memSink is a PieceSink in memory that records how it was written.
type memSink struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	maxWrite  int
	committed bool
	aborted   bool
	sum       [sha256.Size]byte
}

func (s *memSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxWrite = max(s.maxWrite, len(p))
	return s.buf.Write(p)
}

func (s *memSink) Commit(sum [sha256.Size]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.committed, s.sum = true, sum
	return nil
}

func (s *memSink) Abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aborted = true
}

// sinks hands out a memSink per piece, or refuses the pieces in refuse;
// buffered counts the bytes of the buffers the client asked for instead.
type sinks struct {
	refuse map[int]bool

	mu       sync.Mutex
	sinks    map[int]*memSink
	buffered int64
}

func newSinks() *sinks { return &sinks{sinks: map[int]*memSink{}} }

func (s *sinks) sink(i int) (PieceSink, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse[i] {
		return nil, fmt.Errorf("piece %d is being written already", i)
	}
	ms := &memSink{}
	s.sinks[i] = ms
	return ms, nil
}

func (s *sinks) buffer(size int64) []byte {
	s.mu.Lock()
	s.buffered += size
	s.mu.Unlock()
	return make([]byte, size)
}

func (s *sinks) get(i int) *memSink {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sinks[i]
}

// Pieces of 1 MiB come through a Sink in steps of at most 256 KiB: the
// connection holds no buffer of a piece's size.
func TestPiecesGoToTheSinkInStepsWithoutAPieceBuffer(t *testing.T) {
	b := newBlob(t, 5<<20+123, 1<<20)
	k := newKeys(t)
	ts := startServer(t, ServerConfig{}, newFileSource(t, b), k.v, nil)
	s := newSinks()
	c := ts.dial(t, nil, b, k, ClientConfig{Sink: s.sink, Buffer: s.buffer})
	n := b.meta.NumPieces()
	requestAll(t, c, n)
	for range n {
		r, ok := nextResult(t, c)
		if !ok {
			t.Fatalf("connection ended: %v", c.Err())
		}
		ms := s.get(r.Index)
		switch {
		case r.Err != nil || r.Reject != 0:
			t.Fatalf("%v; want the piece", r)
		case r.Sink != PieceSink(ms) || r.Data != nil:
			t.Fatalf("piece %d delivered with Sink %v and %d bytes of Data; want its sink and no data", r.Index, r.Sink, len(r.Data))
		case r.Sum != b.meta.PieceHashes[r.Index]:
			t.Fatalf("piece %d: Sum %x; want %x", r.Index, r.Sum, b.meta.PieceHashes[r.Index])
		case !bytes.Equal(ms.buf.Bytes(), b.piece(r.Index)):
			t.Fatalf("piece %d: the sink got %d bytes differing from the piece", r.Index, ms.buf.Len())
		case ms.maxWrite > readStep:
			t.Fatalf("piece %d written in a step of %d bytes; want at most %d", r.Index, ms.maxWrite, readStep)
		case ms.committed || ms.aborted:
			t.Fatalf("piece %d: committed %v, aborted %v by the client; the receiver decides", r.Index, ms.committed, ms.aborted)
		}
	}
	if s.buffered != 0 {
		t.Fatalf("%d bytes of piece buffers asked for with a Sink that takes every piece; want none", s.buffered)
	}
}

// A piece the Sink refuses (being written by another connection) comes in
// a buffer.
func TestPieceTheSinkRefusesComesInABuffer(t *testing.T) {
	b := newBlob(t, 3<<20, 1<<20)
	k := newKeys(t)
	ts := startServer(t, ServerConfig{}, newFileSource(t, b), k.v, nil)
	s := newSinks()
	s.refuse = map[int]bool{1: true}
	c := ts.dial(t, nil, b, k, ClientConfig{Sink: s.sink, Buffer: s.buffer})
	requestAll(t, c, 3)
	for range 3 {
		r, ok := nextResult(t, c)
		if !ok {
			t.Fatalf("connection ended: %v", c.Err())
		}
		if r.Index == 1 {
			if r.Sink != nil || !bytes.Equal(r.Data, b.piece(1)) {
				t.Fatalf("piece 1, refused by the sink: Sink %v, %d bytes; want the piece in a buffer", r.Sink, len(r.Data))
			}
		} else if r.Sink == nil {
			t.Fatalf("piece %d without its sink", r.Index)
		}
	}
	if s.buffered != 1<<20 {
		t.Fatalf("%d bytes of buffers; want one piece's", s.buffered)
	}
}

func TestCorruptPieceInASinkIsAborted(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	k := newKeys(t)
	bad := *b.meta
	bad.PieceHashes = append([][metainfo.HashSize]byte(nil), b.meta.PieceHashes...)
	bad.PieceHashes[1][0] ^= 1
	ts := startServer(t, ServerConfig{}, newFileSource(t, b), k.v, nil)
	s := newSinks()
	c, err := Dial(t.Context(), ts.addr, nil, &bad, k.capability(t, b.meta.Digest), ClientConfig{Sink: s.sink, Buffer: s.buffer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	requestAll(t, c, 2)
	for i := range 2 {
		r, ok := nextResult(t, c)
		if !ok {
			t.Fatalf("results ended after %d", i)
		}
		if i == 1 && (!errors.Is(r.Err, metainfo.ErrCorruptPiece) || r.Sink != nil) {
			t.Fatalf("corrupt piece 1: %v, Sink %v; want ErrCorruptPiece and no sink", r.Err, r.Sink)
		}
	}
	if ms := s.get(1); !ms.aborted || ms.committed {
		t.Fatalf("the corrupt piece's sink: aborted %v, committed %v; want it aborted", ms.aborted, ms.committed)
	}
	if err := waitDone(t, c); !errors.Is(err, metainfo.ErrCorruptPiece) {
		t.Fatalf("connection error %v; want it ended by the corrupt piece", err)
	}
}

// A piece cancelled while its bytes go into a sink is aborted there.
func TestPieceCancelledInFlightIsAbortedInItsSink(t *testing.T) {
	b := newBlob(t, 1<<20, 512<<10)
	fs := newFakeServer(t)
	s := newSinks()
	c := fs.dial(t, b.meta, ClientConfig{Sink: s.sink, Buffer: s.buffer})
	requestAll(t, c, 2)
	fs.expectFrame(t, FrameRequest)
	fs.expectFrame(t, FrameRequest)
	fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0))})
	fs.write(t, b.piece(0)[:1000])
	// Its bytes go into its sink: the cancel comes after the header.
	eventually.True(t, "piece 0's sink", func() bool { return s.get(0) != nil })
	if err := c.Cancel(0); err != nil {
		t.Fatal(err)
	}
	fs.expectFrame(t, FrameCancel)
	fs.write(t, b.piece(0)[1000:])
	fs.send(t, Frame{Type: FramePiece, Index: 1, Length: uint32(b.meta.PieceSize(1))})
	fs.write(t, b.piece(1))
	r, ok := nextResult(t, c)
	if !ok || r.Index != 1 || r.Sink == nil {
		t.Fatalf("first result %v (conn %v); want piece 1 in its sink, the cancelled 0 dropped", r, c.Err())
	}
	// Piece 0 was read whole before piece 1.
	if ms := s.get(0); !ms.aborted || ms.committed {
		t.Fatalf("the cancelled piece's sink: aborted %v, committed %v; want it aborted", ms.aborted, ms.committed)
	}
}
