package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// fakeStream is the peer's end of an Exchange stream: the test sends what
// the peer would (in) and reads what the conn sent (out).
type fakeStream struct {
	ctx     context.Context
	in, out chan *peerpb.Message
}

func newFakeStream(t *testing.T) *fakeStream {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &fakeStream{ctx: ctx, in: make(chan *peerpb.Message), out: make(chan *peerpb.Message, 64)}
}

func (f *fakeStream) Send(m *peerpb.Message) error {
	// A copy, as gRPC marshals before Send returns: sendLoop reuses its
	// chunk buffer.
	select {
	case f.out <- proto.Clone(m).(*peerpb.Message):
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	}
}

func (f *fakeStream) Recv() (*peerpb.Message, error) {
	select {
	case m := <-f.in:
		return m, nil
	case <-f.ctx.Done():
		return nil, io.EOF
	}
}

func (f *fakeStream) Context() context.Context { return f.ctx }

// next returns the next message the conn sent.
func (f *fakeStream) next(t *testing.T) *peerpb.Message {
	t.Helper()
	select {
	case m := <-f.out:
		return m
	case <-time.After(eventually.Timeout):
		t.Fatal("the conn sent nothing")
		return nil
	}
}

func (f *fakeStream) send(t *testing.T, m *peerpb.Message) {
	t.Helper()
	select {
	case f.in <- m:
	case <-time.After(eventually.Timeout):
		t.Fatal("the conn does not receive")
	}
}

func chunkMsg(i int, off int64, data []byte) *peerpb.Message {
	return &peerpb.Message{Msg: &peerpb.Message_Chunk{Chunk: &peerpb.PieceChunk{Index: uint32(i), Offset: off, Data: data}}}
}

// runConn runs a conn over a fake stream with a peer that holds nothing
// (as far as the conn knows), for a blob of m in s's store.
func runConn(t *testing.T, s *Swarm, m *metainfo.Metainfo, origin bool) (*conn, *fakeStream) {
	t.Helper()
	return runConnWith(t, s, m, origin, nil)
}

// runConnWith is runConn with pw as the conn's piece connection (nil:
// none, pieces on the stream).
func runConnWith(t *testing.T, s *Swarm, m *metainfo.Metainfo, origin bool, pw *piecewire.Conn) (*conn, *fakeStream) {
	t.Helper()
	st := newFakeStream(t)
	c := newConn(s, m, st, "the-peer", metainfo.NewBitfield(m.NumPieces()))
	c.origin = origin
	c.usePieceConn(pw)
	s.mu.Lock()
	c.bs = s.blobLocked(m.Digest)
	s.mu.Unlock()
	go c.run()
	t.Cleanup(func() { c.close(errors.New("test over")) })
	return c, st
}

// attachDownload attaches c to a download that only collects its events.
func attachDownload(c *conn) *download {
	dl := &download{events: make(chan any, 64), done: make(chan struct{})}
	c.attach(dl)
	return dl
}

func describe(m *peerpb.Message) string {
	switch msg := m.Msg.(type) {
	case *peerpb.Message_Request:
		return fmt.Sprint("request ", msg.Request.GetIndex())
	case *peerpb.Message_Cancel:
		return fmt.Sprint("cancel ", msg.Cancel.GetIndex())
	case *peerpb.Message_Have:
		return fmt.Sprint("have ", msg.Have.GetIndex())
	case *peerpb.Message_Reject:
		return fmt.Sprint("reject ", msg.Reject.GetIndex(), " ", msg.Reject.GetReason())
	case *peerpb.Message_Chunk:
		return fmt.Sprint("chunk ", msg.Chunk.GetIndex())
	}
	return fmt.Sprintf("%T", m.Msg)
}

// pieceEvents returns the events the download got other than progress
// reports, without waiting.
func pieceEvents(dl *download) []any {
	var evs []any
	for {
		select {
		case ev := <-dl.events:
			if _, progress := ev.(evProgress); !progress {
				evs = append(evs, ev)
			}
		default:
			return evs
		}
	}
}

// expect reads the next message and checks it is want.
func expect(t *testing.T, st *fakeStream, want, why string) *peerpb.Message {
	t.Helper()
	m := st.next(t)
	if got := describe(m); got != want {
		t.Fatalf("%s: the conn sent %q, want %q", why, got, want)
	}
	return m
}

// startOriginPiece asks the origin for piece 0 and has it send head, the
// piece's first bytes, waiting until c assembled them.
func startOriginPiece(t *testing.T, c *conn, st *fakeStream, head []byte) {
	t.Helper()
	c.request(0)
	expect(t, st, "request 0", "asking the origin for piece 0")
	st.send(t, chunkMsg(0, 0, head))
	eventually.True(t, fmt.Sprintf("%d bytes of piece 0 assembled", len(head)), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.assembling[0]) == len(head)
	})
}

// TestOriginPieceHalfReceivedIsLetFinish: the scheduler takes back a
// request to an origin once half the piece arrived. No cancel goes out,
// the next request to the origin waits until the piece is in, and the
// piece still reaches the download.
func TestOriginPieceHalfReceivedIsLetFinish(t *testing.T) {
	s, _ := newPieceSwarm(t, "")
	data, m := holdPieces(t, s, 4)
	c, st := runConn(t, s, m, true)
	dl := attachDownload(c)
	size := m.PieceSize(0)

	startOriginPiece(t, c, st, data[:size/2])
	c.cancelRequest(0)
	c.request(1)
	c.have(3) // a marker: whatever the two calls above sent comes before it
	expect(t, st, "have 3", "after taking back a half-received origin piece and asking for another")

	st.send(t, chunkMsg(0, size/2, data[size/2:size]))
	expect(t, st, "request 1", "once the piece let finish arrived")
	var evs []any
	eventually.True(t, "piece 0, let finish, reaches the download", func() bool {
		evs = append(evs, pieceEvents(dl)...)
		return len(evs) > 0
	})
	if p, ok := evs[0].(evPiece); !ok || p.piece != 0 || p.err != nil || len(evs) != 1 {
		t.Fatalf("the download got %#v; want piece 0, stored, alone", evs)
	}
}

// TestOriginPieceHalfReceivedOnThePieceDataPathIsLetFinish is the
// take-back rule on the piece data path: there a cancel cannot stop a
// piece already on its way (it arrives whole and is thrown away), so a
// piece half received from the origin is let finish, and the request held
// meanwhile goes out on the piece connection, where the pieces come, not
// on the stream.
func TestOriginPieceHalfReceivedOnThePieceDataPathIsLetFinish(t *testing.T) {
	s, key := newPieceSwarm(t, "")
	const pieceLength = 1 << 20 // four of the piece client's read steps
	data, m := createBlob(t, s, 3, pieceLength, 3)
	// The origin's piece server sends the first half of piece 0, then
	// waits for gate.
	gate := make(chan struct{})
	src := &gatedSource{data: data, meta: m, gate: gate, opened: make(chan int, 8)}
	pw := dialPieceServer(t, s, key, m, servePieces(t, src, key))
	c, st := runConnWith(t, s, m, true, pw)
	dl := attachDownload(c)

	c.request(0)
	eventually.True(t, "half of piece 0 in from the origin's piece connection", func() bool {
		n, ok := pw.Arrived(0)
		return ok && n >= pieceLength/2
	})
	c.cancelRequest(0)
	c.request(1)
	c.mu.Lock()
	sent := c.requested[1] != 0
	c.mu.Unlock()
	if sent {
		t.Fatal("piece 1 was asked of the origin while piece 0, taken back half received, is still arriving; want the request held")
	}

	close(gate)
	var evs []any
	eventually.True(t, "pieces 0 (let finish) and 1 (asked once 0 was in) reach the download", func() bool {
		evs = append(evs, pieceEvents(dl)...)
		return len(evs) >= 2
	})
	for k, want := range []int{0, 1} {
		if p, ok := evs[k].(evPiece); !ok || p.piece != want || p.err != nil {
			t.Fatalf("download event %d is %#v; want piece %d, stored (all: %#v)", k, evs[k], want, evs)
		}
	}
	if got := []int{<-src.opened, <-src.opened}; got[0] != 0 || got[1] != 1 {
		t.Fatalf("the origin's piece server was asked for pieces %v; want 0 then 1", got)
	}
	c.have(2) // a marker: a request sent on the stream would come before it
	expect(t, st, "have 2", "the held request went out on the piece connection, so the stream carries only the Have")
}

// TestOriginPieceTakenBackAfterItsDeliveryHoldsNothing: the scheduler's
// take-back of an origin piece can cross the piece on its way to the
// download. The piece connection reports a delivered piece as whole; the
// conn must not let it "finish" (an end that came already), which would
// hold every later request to the origin for good.
func TestOriginPieceTakenBackAfterItsDeliveryHoldsNothing(t *testing.T) {
	s, key := newPieceSwarm(t, "")
	data, m := holdPieces(t, s, 4)
	gate := make(chan struct{})
	close(gate)
	src := &gatedSource{data: data, meta: m, gate: gate, opened: make(chan int, 8)}
	pw := dialPieceServer(t, s, key, m, servePieces(t, src, key))
	c, _ := runConnWith(t, s, m, true, pw)
	dl := attachDownload(c)

	c.request(0)
	var evs []any
	eventually.True(t, "piece 0 to reach the download", func() bool {
		evs = append(evs, pieceEvents(dl)...)
		return len(evs) > 0
	})
	c.cancelRequest(0)
	c.request(1)
	eventually.True(t, "piece 1, asked after piece 0 was delivered and then taken back, to reach the download (not held for piece 0 to finish)", func() bool {
		evs = append(evs, pieceEvents(dl)...)
		return len(evs) > 1
	})
	if p, ok := evs[1].(evPiece); !ok || p.piece != 1 || p.err != nil {
		t.Fatalf("the download got %#v; want piece 0 then piece 1, stored", evs)
	}
}

// gatedSource serves a blob's pieces on the piece data path, piece 0 in
// two halves with a wait for gate between them, and tells opened which
// pieces it was asked for.
type gatedSource struct {
	data   []byte
	meta   *metainfo.Metainfo
	gate   chan struct{}
	opened chan int
}

func (g *gatedSource) OpenPiece(_ context.Context, _ digest.Digest, i int) (*piecewire.Piece, error) {
	g.opened <- i
	off, size := g.meta.PieceOffset(i), g.meta.PieceSize(i)
	b := g.data[off : off+size]
	if i != 0 {
		return &piecewire.Piece{Size: size, Reader: bytes.NewReader(b)}, nil
	}
	return &piecewire.Piece{Size: size, Reader: io.MultiReader(bytes.NewReader(b[:size/2]), &gatedReader{gate: g.gate, r: bytes.NewReader(b[size/2:])})}, nil
}

// gatedReader reads r once gate is closed.
type gatedReader struct {
	gate chan struct{}
	r    io.Reader
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.gate
	return g.r.Read(p)
}

// TestOriginPieceUnderHalfIsCut: taken back with less than half of it
// received, an origin piece is cancelled and what still arrives of it is
// discarded, not handed to the download.
func TestOriginPieceUnderHalfIsCut(t *testing.T) {
	s, _ := newPieceSwarm(t, "")
	data, m := holdPieces(t, s, 4)
	c, st := runConn(t, s, m, true)
	dl := attachDownload(c)
	size := m.PieceSize(0)
	discarded := s.metrics.discarded.WithLabelValues("origin")
	before := testutil.ToFloat64(discarded)

	startOriginPiece(t, c, st, data[:size/4])
	c.cancelRequest(0)
	expect(t, st, "cancel 0", "taking back an origin piece a quarter received")
	c.request(1)
	expect(t, st, "request 1", "asking for another piece after a cut")

	st.send(t, chunkMsg(0, size/4, data[size/4:size]))
	eventually.True(t, "the rest of the cut piece discarded", func() bool {
		return testutil.ToFloat64(discarded)-before == float64(size-size/4)
	})
	if evs := pieceEvents(dl); len(evs) != 0 {
		t.Fatalf("the download got %#v for a piece it cut; want nothing", evs)
	}
}

// TestPeerRequestsAreAnsweredFromTheStore: the upload half sends a held
// piece in chunks that add up to it, rejects a piece not held as
// NOT_HELD, and drops a peer asking for a piece past the blob's end.
func TestPeerRequestsAreAnsweredFromTheStore(t *testing.T) {
	s, _ := newPieceSwarm(t, "")
	data, m := holdPieces(t, s, 4, 0, 1)
	c, st := runConn(t, s, m, false)

	st.send(t, &peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: 1}}})
	var got []byte
	for int64(len(got)) < m.PieceSize(1) {
		ch := expect(t, st, "chunk 1", "answering a request of held piece 1").GetChunk()
		if ch.GetOffset() != int64(len(got)) {
			t.Fatalf("chunk of piece 1 at offset %d, want %d", ch.GetOffset(), len(got))
		}
		got = append(got, ch.GetData()...)
	}
	off := m.PieceOffset(1)
	if !bytes.Equal(got, data[off:off+m.PieceSize(1)]) {
		t.Fatal("the chunks of piece 1 are not its bytes")
	}

	st.send(t, &peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: 2}}})
	expect(t, st, "reject 2 REASON_NOT_HELD", "answering a request of piece 2, not held")

	st.send(t, &peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: 9}}})
	select {
	case <-c.closed:
	case <-time.After(eventually.Timeout):
		t.Fatal("a request of piece 9 of a 4-piece blob did not end the stream")
	}
}

// servePieces serves src on a piece data path listener on 127.0.0.1,
// checking capabilities against key, until the test ends, and returns its
// address.
func servePieces(t *testing.T, src piecewire.Source, key *auth.Key) string {
	t.Helper()
	return servePiecesCounting(t, src, key).Addr().String()
}

// servePiecesCounting is servePieces returning the listener, which counts
// the connections it accepted.
func servePiecesCounting(t *testing.T, src piecewire.Source, key *auth.Key) *countingListener {
	t.Helper()
	srv := piecewire.NewServer(piecewire.ServerConfig{}, src, auth.NewVerifier(key.Public()))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: l}
	go func() { _ = srv.Serve(cl) }()
	t.Cleanup(func() { _ = srv.Close() })
	return cl
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}
