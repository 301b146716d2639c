package piecewire

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// fetchAll requests every piece of b over c, pipelining up to the
// connection's limit, and checks each against the blob.
func fetchAll(t *testing.T, c *Conn, b *blob) {
	t.Helper()
	n := b.meta.NumPieces()
	next, got := 0, 0
	for next < n && next < c.cfg.MaxOutstanding {
		if err := c.Request(next); err != nil {
			t.Fatalf("request %d: %v", next, err)
		}
		next++
	}
	seen := make([]bool, n)
	for got < n {
		r, ok := nextResult(t, c)
		if !ok {
			t.Fatalf("connection ended after %d of %d pieces: %v", got, n, c.Err())
		}
		if r.Err != nil || r.Reject != 0 {
			t.Fatalf("piece %d: err %v, reject %v; want the piece", r.Index, r.Err, r.Reject)
		}
		if seen[r.Index] {
			t.Fatalf("piece %d delivered twice", r.Index)
		}
		seen[r.Index] = true
		if !bytes.Equal(r.Data, b.piece(r.Index)) {
			t.Fatalf("piece %d: %d bytes differing from the blob's", r.Index, len(r.Data))
		}
		if r.Sum != b.meta.PieceHashes[r.Index] {
			t.Fatalf("piece %d delivered with Sum %x; want its SHA-256 %x, for the store to take instead of hashing again", r.Index, r.Sum, b.meta.PieceHashes[r.Index])
		}
		got++
		if next < n {
			if err := c.Request(next); err != nil {
				t.Fatalf("request %d: %v", next, err)
			}
			next++
		}
	}
}

// serveAll fetches every piece of b from a server of src over plaintext,
// three requests at a time, and closes the connection cleanly.
func serveAll(t *testing.T, src *fileSource, b *blob) *testServer {
	t.Helper()
	k := newKeys(t)
	ts := startServer(t, ServerConfig{}, src, k.v, nil)
	c := ts.dial(t, nil, b, k, ClientConfig{MaxOutstanding: 3})
	fetchAll(t, c, b)
	c.Close()
	if err := ts.connEnd(t); err != nil {
		t.Fatalf("server connection ended with %v; want a clean close", err)
	}
	return ts
}

func TestPlaintextPiecesGoOutWithSendfile(t *testing.T) {
	b := newBlob(t, 5<<20+123, 1<<20)
	src := newFileSource(t, b)
	st := serveAll(t, src, b).Stats()
	if st.SendfileBytes != int64(len(b.data)) || st.CopiedBytes != 0 || st.Pieces != int64(b.meta.NumPieces()) {
		t.Fatalf("server stats %+v; want all %d bytes of %d pieces sent with sendfile and none copied", st, len(b.data), b.meta.NumPieces())
	}
	if got := src.done.Load(); got != int64(b.meta.NumPieces()) {
		t.Fatalf("Piece.Done called %d times; want once per piece (%d)", got, b.meta.NumPieces())
	}
}

// Piece.Sent is told of each write round (at most 1 MiB) as it is
// written, with sendfile and with copies: a sender on a slow link measures
// its rate while a piece goes, not only once it ended.
func TestPieceSentIsToldOfEachWriteRound(t *testing.T) {
	for _, asReader := range []bool{false, true} {
		b := newBlob(t, 9<<20+5, 4<<20) // pieces of 4, 4 and 1 MiB + 5
		src := newFileSource(t, b)
		src.asReader = asReader
		serveAll(t, src, b)
		if n, r := src.sentBytes.Load(), src.rounds.Load(); n != int64(len(b.data)) || r < 10 {
			t.Errorf("reader %v: Piece.Sent told of %d bytes in %d rounds; want all %d, in at least 10 rounds of at most 1 MiB", asReader, n, r, len(b.data))
		}
		if n := src.told.Load(); n != 3 {
			t.Errorf("reader %v: %d of 3 pieces had their bytes told by Sent before Done", asReader, n)
		}
	}
}

func TestTLSPiecesAreWrittenThroughTLS(t *testing.T) {
	b := newBlob(t, 3<<20+7, 1<<20)
	k := newKeys(t)
	srvTLS, cliTLS := tlsConfigs(t)
	ts := startServer(t, ServerConfig{}, newFileSource(t, b), k.v, srvTLS)
	c := ts.dial(t, cliTLS, b, k, ClientConfig{})
	if v := c.nc.(*tls.Conn).ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("TLS version %x; want TLS 1.3", v)
	}
	fetchAll(t, c, b)
	c.Close()
	if err := ts.connEnd(t); err != nil {
		t.Fatalf("server connection ended with %v; want a clean close", err)
	}
	if st := ts.Stats(); st.CopiedBytes != int64(len(b.data)) || st.SendfileBytes != 0 {
		t.Fatalf("server stats %+v; want all %d bytes written through TLS, none with sendfile (it would bypass encryption)", st, len(b.data))
	}
}

func TestPiecesWithoutAFileAreCopied(t *testing.T) {
	b := newBlob(t, 2<<20, 256<<10)
	k := newKeys(t)
	src := newFileSource(t, b)
	src.asReader = true
	ts := startServer(t, ServerConfig{}, src, k.v, nil)
	c := ts.dial(t, nil, b, k, ClientConfig{})
	fetchAll(t, c, b)
	c.Close()
	if err := ts.connEnd(t); err != nil {
		t.Fatalf("server connection ended with %v; want a clean close", err)
	}
	if st := ts.Stats(); st.CopiedBytes != int64(len(b.data)) {
		t.Fatalf("server stats %+v; want %d bytes copied from the reader", st, len(b.data))
	}
}

func TestCapabilityIsCheckedBeforeAnythingIsSent(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	other := newBlob(t, 1<<10, 256<<10)
	k := newKeys(t)
	stranger := newKeys(t)
	expired, err := k.key.IssueCapabilityAt(b.meta.Digest, time.Now().Add(-3*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token string
	}{
		{"none", ""},
		{"for another blob", k.capability(t, other.meta.Digest)},
		{"by another key", stranger.capability(t, b.meta.Digest)},
		{"expired", expired},
		{"junk", "not.a.token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFileSource(t, b)
			ts := startServer(t, ServerConfig{}, src, k.v, nil)
			c, err := Dial(context.Background(), ts.addr, nil, b.meta, tc.token, ClientConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Request(0); err != nil {
				t.Fatal(err)
			}
			if r, ok := nextResult(t, c); ok {
				t.Fatalf("a result for piece %d (%d bytes, reject %v) for a request with capability %q; want the connection refused", r.Index, len(r.Data), r.Reject, tc.name)
			}
			if err := c.Err(); !errors.Is(err, ErrDenied) {
				t.Fatalf("connection error %v; want ErrDenied", err)
			}
			if err := ts.connEnd(t); !errors.Is(err, auth.ErrInvalidCapability) {
				t.Fatalf("server connection ended with %v; want the capability refusal", err)
			}
			if n := src.totalOpens(); n != 0 || ts.Stats().Pieces != 0 {
				t.Fatalf("the source opened %d pieces, %d sent; want nothing looked at before the capability verified", n, ts.Stats().Pieces)
			}
		})
	}
}

func TestCorruptPieceIsRejectedAndEndsTheConnection(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	k := newKeys(t)
	// The source's file says one thing, the metainfo another: piece 2's
	// hash is changed.
	bad := *b.meta
	bad.PieceHashes = append([][metainfo.HashSize]byte(nil), b.meta.PieceHashes...)
	bad.PieceHashes[2][0] ^= 1
	ts := startServer(t, ServerConfig{}, newFileSource(t, b), k.v, nil)
	c, err := Dial(context.Background(), ts.addr, nil, &bad, k.capability(t, b.meta.Digest), ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	requestAll(t, c, 3)
	for i := range 3 {
		r, ok := nextResult(t, c)
		if !ok {
			t.Fatalf("results ended after %d; want pieces 0, 1 and the corrupt 2", i)
		}
		switch {
		case r.Index != i:
			t.Fatalf("result for piece %d; want %d (answers in order)", r.Index, i)
		case i < 2 && (r.Err != nil || !bytes.Equal(r.Data, b.piece(i))):
			t.Fatalf("piece %d: %v; want it verified", i, r.Err)
		case i == 2 && (!errors.Is(r.Err, metainfo.ErrCorruptPiece) || r.Data != nil):
			t.Fatalf("corrupt piece 2: err %v, %d bytes; want ErrCorruptPiece and no data", r.Err, len(r.Data))
		}
	}
	if err := waitDone(t, c); !errors.Is(err, metainfo.ErrCorruptPiece) {
		t.Fatalf("connection error %v; want it ended by the corrupt piece", err)
	}
}

// startGated serves b from a source whose OpenPiece waits at its gate
// (close src.gate to let it go) and dials it; cancels gets the index of
// each Cancel the server handles.
func startGated(t *testing.T, b *blob) (src *fileSource, ts *testServer, c *Conn, cancels <-chan uint32) {
	t.Helper()
	k := newKeys(t)
	src = newFileSource(t, b)
	src.gate = make(chan struct{})
	handled := make(chan uint32, 1)
	ts = startServer(t, ServerConfig{}, src, k.v, nil, func(f Frame) {
		if f.Type == FrameCancel {
			handled <- f.Index
		}
	})
	return src, ts, ts.dial(t, nil, b, k, ClientConfig{}), handled
}

func TestCancelledRequestIsNotSent(t *testing.T) {
	b := newBlob(t, 1<<20, 128<<10)
	src, _, c, cancels := startGated(t, b)
	requestAll(t, c, 4)
	// Piece 0 is being opened (held at the gate); 1 to 3 wait in the queue.
	eventually.True(t, "the server to start on piece 0", func() bool { return src.opens(0) == 1 })
	if err := c.Cancel(2); err != nil {
		t.Fatal(err)
	}
	if err := c.Request(4); err != nil {
		t.Fatal(err)
	}
	if i := <-cancels; i != 2 {
		t.Fatalf("the server handled a cancel of %d; want 2", i)
	}
	close(src.gate)
	var got []int
	for len(got) < 4 {
		r, ok := nextResult(t, c)
		if !ok {
			t.Fatalf("connection ended: %v", c.Err())
		}
		if r.Err != nil || r.Reject != 0 || !bytes.Equal(r.Data, b.piece(r.Index)) {
			t.Fatalf("piece %d: err %v reject %v", r.Index, r.Err, r.Reject)
		}
		got = append(got, r.Index)
	}
	if want := []int{0, 1, 3, 4}; !equalInts(got, want) {
		t.Fatalf("pieces delivered %v; want %v (2 cancelled)", got, want)
	}
	if n := src.opens(2); n != 0 {
		t.Fatalf("the cancelled piece was opened %d times; want never", n)
	}
	// The cancelled request was answered (ReasonCancelled) and is no longer
	// outstanding: the connection takes a request for it again.
	if err := c.Request(2); err != nil {
		t.Fatalf("requesting piece 2 again: %v", err)
	}
	if r, ok := nextResult(t, c); !ok || r.Index != 2 || !bytes.Equal(r.Data, b.piece(2)) {
		t.Fatalf("piece 2 asked again: %+v, %v", r, c.Err())
	}
}

// A request cancelled while its piece is being opened (the source waiting,
// for an upload slot say) is not sent: OpenPiece's context ends, and the
// request is answered as a cancelled one not started. Before, it went out
// whole once opened, to be dropped by the client.
func TestPieceCancelledWhileBeingOpenedIsNotSent(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	src, ts, c, cancels := startGated(t, b)
	requestAll(t, c, 2)
	eventually.True(t, "the server to open piece 0", func() bool { return src.opens(0) == 1 })
	if err := c.Cancel(0); err != nil {
		t.Fatal(err)
	}
	if i := <-cancels; i != 0 {
		t.Fatalf("the server handled a cancel of %d; want 0", i)
	}
	close(src.gate)
	if r, ok := nextResult(t, c); !ok || r.Index != 1 || !bytes.Equal(r.Data, b.piece(1)) {
		t.Fatalf("first result %+v (conn %v); want piece 1, the cancelled 0 never sent", r, c.Err())
	}
	// The server counts a piece once its last byte is written, which can
	// be after the client has read it: wait for the count, then check it
	// stays at piece 1 alone.
	eventually.True(t, "the server to count piece 1 sent", func() bool { return ts.Stats().Pieces >= 1 && src.done.Load() >= 1 })
	if st := ts.Stats(); st.Pieces != 1 || st.SendfileBytes != b.meta.PieceSize(1) {
		t.Fatalf("server stats %+v; want piece 1 alone sent", st)
	}
	if n := src.done.Load(); n != 1 {
		t.Fatalf("Piece.Done called %d times; want once, for piece 1 (piece 0 was never opened)", n)
	}
	// Answered as cancelled: the client may ask for it again.
	if err := c.Request(0); err != nil {
		t.Fatalf("requesting piece 0 again: %v", err)
	}
	if r, ok := nextResult(t, c); !ok || r.Index != 0 || !bytes.Equal(r.Data, b.piece(0)) {
		t.Fatalf("piece 0 asked again: %+v, %v", r, c.Err())
	}
}

func TestPieceCancelledInFlightIsDiscarded(t *testing.T) {
	b := newBlob(t, 1<<20, 512<<10)
	fs := newFakeServer(t)
	c := fs.dial(t, b.meta, ClientConfig{})
	if err := c.Request(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Request(1); err != nil {
		t.Fatal(err)
	}
	fs.expectFrame(t, FrameRequest)
	fs.expectFrame(t, FrameRequest)
	// The server has started piece 0 when the cancel crosses it.
	fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0))})
	fs.write(t, b.piece(0)[:1000])
	if err := c.Cancel(0); err != nil {
		t.Fatal(err)
	}
	fs.expectFrame(t, FrameCancel)
	fs.write(t, b.piece(0)[1000:])
	fs.send(t, Frame{Type: FramePiece, Index: 1, Length: uint32(b.meta.PieceSize(1))})
	fs.write(t, b.piece(1))
	r, ok := nextResult(t, c)
	if !ok || r.Index != 1 || !bytes.Equal(r.Data, b.piece(1)) {
		t.Fatalf("first result %+v (conn %v); want piece 1, the cancelled 0 dropped", r, c.Err())
	}
	if c.Err() != nil {
		t.Fatalf("connection ended: %v", c.Err())
	}
}

// Progress is told of each step of a piece as it arrives, a cancelled
// piece's dropped bytes included: the caller's piece timeout must not cut
// a peer whose pieces cross a slow link, and the bytes of a piece it
// cancelled keep its next requests waiting as much as any.
func TestProgressIsToldOfEachStepAsItArrives(t *testing.T) {
	b := newBlob(t, 3<<20, 1<<20) // three pieces of four steps
	var mu sync.Mutex
	var told []int
	fs := newFakeServer(t)
	c := fs.dial(t, b.meta, ClientConfig{Progress: func(i int) {
		mu.Lock()
		told = append(told, i)
		mu.Unlock()
	}})
	for i := range 3 {
		if err := c.Request(i); err != nil {
			t.Fatal(err)
		}
		fs.expectFrame(t, FrameRequest)
	}
	if err := c.Cancel(1); err != nil {
		t.Fatal(err)
	}
	fs.expectFrame(t, FrameCancel)
	// A server that had started piece 1 before the cancel came sends it
	// whole.
	for i := range 3 {
		fs.send(t, Frame{Type: FramePiece, Index: uint32(i), Length: uint32(b.meta.PieceSize(i))})
		fs.write(t, b.piece(i))
	}
	for _, want := range []int{0, 2} {
		if r, ok := nextResult(t, c); !ok || r.Index != want || r.Data == nil {
			t.Fatalf("result %+v (conn %v); want piece %d", r, c.Err(), want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []int{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2}
	if !equalInts(told, want) {
		t.Fatalf("Progress told of pieces %v; want each of the three pieces' four steps in order, %v", told, want)
	}
}

// TestPieceRequestedAgainWhileItsCancelledBytesAreDroppedIsAskedAgain: a
// piece cancelled after the server started it, and requested again while
// its bytes are being read and dropped, is asked for again: the server
// owes nothing more (it sent the piece). The request was once taken off
// with the dropped bytes and never answered, and the caller waited for it
// until its piece timeout.
func TestPieceRequestedAgainWhileItsCancelledBytesAreDroppedIsAskedAgain(t *testing.T) {
	b := newBlob(t, 512<<10, 256<<10)
	// One piece's worth of burst and next to no rate: the reader takes the
	// whole burst for piece 0's one step, which shows it is past its
	// header and dropping it.
	lim := rate.NewLimiter(1, 256<<10)
	fs := newFakeServer(t)
	c := fs.dial(t, b.meta, ClientConfig{Ingress: lim})
	for i := range 2 {
		if err := c.Request(i); err != nil {
			t.Fatal(err)
		}
		fs.expectFrame(t, FrameRequest)
	}
	if err := c.Cancel(0); err != nil {
		t.Fatal(err)
	}
	fs.expectFrame(t, FrameCancel)
	// The server had started piece 0 when the cancel came.
	fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0))})
	fs.write(t, b.piece(0)[:1000])
	eventually.True(t, "the client dropping the cancelled piece 0", func() bool { return lim.Tokens() < 1<<10 })
	lim.SetLimit(rate.Inf)
	if err := c.Request(0); err != nil {
		t.Fatal(err)
	}
	fs.write(t, b.piece(0)[1000:])
	if f := fs.expectFrame(t, FrameRequest); f.Index != 0 {
		t.Fatalf("request frame for piece %d; want 0, asked again once its dropped bytes were in", f.Index)
	}
	expectAskedAgainAnswered(t, fs, c, b, 0, 1)
}

// expectAskedAgainAnswered answers piece other, then piece i (asked for
// again by the connection), and checks that the caller gets exactly those
// two, in that order, and that piece i is outstanding no more.
func expectAskedAgainAnswered(t *testing.T, fs *fakeServer, c *Conn, b *blob, i, other int) {
	t.Helper()
	for _, j := range []int{other, i} {
		fs.send(t, Frame{Type: FramePiece, Index: uint32(j), Length: uint32(b.meta.PieceSize(j))})
		fs.write(t, b.piece(j))
		if r, ok := nextResult(t, c); !ok || r.Index != j || !bytes.Equal(r.Data, b.piece(j)) {
			t.Fatalf("result %v (conn %v); want piece %d", r, c.Err(), j)
		}
	}
	if err := c.Request(i); err != nil {
		t.Fatalf("requesting piece %d once delivered: %v", i, err)
	}
}

// TestPieceHasArrivedFromItsHeader: Arrived reports a piece started from
// the moment its Piece frame's header is read, also while the buffer for
// its bytes is being found (a 4 MiB allocation): said not started then, a
// caller withdrawing requests (the agent's origin take-back) cut a piece
// already on its way, and its bytes were thrown away.
func TestPieceHasArrivedFromItsHeader(t *testing.T) {
	b := newBlob(t, 1<<20, 512<<10)
	fs := newFakeServer(t)
	finding, found := make(chan struct{}), make(chan struct{})
	c := fs.dial(t, b.meta, ClientConfig{Buffer: func(size int64) []byte {
		close(finding)
		<-found
		return make([]byte, size)
	}})
	if err := c.Request(0); err != nil {
		t.Fatal(err)
	}
	fs.expectFrame(t, FrameRequest)
	fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0))})
	select {
	case <-finding:
	case <-time.After(eventually.Timeout):
		t.Fatal("the client never took a buffer for piece 0")
	}
	n, ok := c.Arrived(0)
	close(found)
	if !ok || n != 0 {
		t.Fatalf("Arrived(0) = %d, %v once its header is read; want 0, true (started)", n, ok)
	}
	fs.write(t, b.piece(0))
	if r, ok := nextResult(t, c); !ok || r.Index != 0 || !bytes.Equal(r.Data, b.piece(0)) {
		t.Fatalf("result %v (conn %v); want piece 0", r, c.Err())
	}
}

// TestPieceWaitingInResultsHasArrived: a piece read whole and verified
// whose Result the caller has not taken yet is complete for Arrived, not
// "not started": a caller withdrawing requests (the agent's origin
// take-back) would otherwise cancel a piece that is already here and
// throw its bytes away. Requested again, it starts over.
func TestPieceWaitingInResultsHasArrived(t *testing.T) {
	b := newBlob(t, 1<<20, 512<<10)
	fs := newFakeServer(t)
	c := fs.dial(t, b.meta, ClientConfig{})
	if err := c.Request(0); err != nil {
		t.Fatal(err)
	}
	fs.expectFrame(t, FrameRequest)
	if n, ok := c.Arrived(0); ok {
		t.Fatalf("Arrived(0) = %d, true before any byte of it; want not started", n)
	}
	fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0))})
	fs.write(t, b.piece(0))
	eventually.True(t, "piece 0 read and waiting in Results", func() bool { return len(c.Results()) == 1 })
	if n, ok := c.Arrived(0); !ok || n != b.meta.PieceSize(0) {
		t.Fatalf("Arrived(0) = %d, %v for a piece read whole and waiting in Results; want %d, true (complete)", n, ok, b.meta.PieceSize(0))
	}
	if err := c.Cancel(0); err != nil {
		t.Fatal(err)
	}
	r, ok := nextResult(t, c)
	if !ok || r.Index != 0 || !bytes.Equal(r.Data, b.piece(0)) {
		t.Fatalf("result %+v (conn %v); want piece 0, here before the cancel", r, c.Err())
	}
	if n, ok := c.Arrived(0); !ok || n != b.meta.PieceSize(0) {
		t.Fatalf("Arrived(0) = %d, %v after its Result was taken; want still complete", n, ok)
	}
	if err := c.Request(0); err != nil {
		t.Fatal(err)
	}
	fs.expectFrame(t, FrameRequest)
	if n, ok := c.Arrived(0); ok {
		t.Fatalf("Arrived(0) = %d, true once requested again; want not started", n)
	}
}

func TestSourceRejectionsReachTheClient(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	k := newKeys(t)
	src := newFileSource(t, b)
	src.reject = func(i int) error {
		switch i {
		case 1:
			return ErrNotHeld
		case 2:
			return &RejectError{Reason: ReasonAtPeers, RetryAfter: 1500 * time.Millisecond}
		case 3:
			return errors.New("disk on fire")
		}
		return nil
	}
	ts := startServer(t, ServerConfig{}, src, k.v, nil)
	c := ts.dial(t, nil, b, k, ClientConfig{})
	requestAll(t, c, 4)
	want := []Result{{Index: 0}, {Index: 1, Reject: ReasonNotHeld}, {Index: 2, Reject: ReasonAtPeers, RetryAfter: 1500 * time.Millisecond}, {Index: 3, Reject: ReasonNotHeld}}
	for _, w := range want {
		r, ok := nextResult(t, c)
		if !ok || r.Index != w.Index || r.Reject != w.Reject || r.RetryAfter != w.RetryAfter || (w.Reject == 0) != (r.Data != nil) {
			t.Fatalf("result %+v (conn %v); want %+v", r, c.Err(), w)
		}
	}
}

func TestRequestsBeyondTheQueueAreBusy(t *testing.T) {
	b := newBlob(t, 1<<20, 128<<10)
	k := newKeys(t)
	src := newFileSource(t, b)
	src.gate = make(chan struct{})
	handled := make(chan Frame, 8)
	ts := startServer(t, ServerConfig{MaxQueued: 2}, src, k.v, nil, func(f Frame) { handled <- f })
	c := ts.dial(t, nil, b, k, ClientConfig{})
	requestAll(t, c, 4)
	// Requests are read in order while piece 0 waits at the gate: 0 and 1
	// fill the queue, 2 and 3 are busy. The rejects are answered after
	// piece 0.
	for range 4 {
		<-handled
	}
	close(src.gate)
	busy := map[int]bool{}
	for range 4 {
		r, ok := nextResult(t, c)
		if !ok {
			t.Fatalf("connection ended: %v", c.Err())
		}
		if r.Reject == ReasonBusy {
			busy[r.Index] = true
		} else if r.Data == nil {
			t.Fatalf("piece %d: %+v", r.Index, r)
		}
	}
	if len(busy) != 2 || !busy[2] || !busy[3] {
		t.Fatalf("busy rejects for %v; want pieces 2 and 3", busy)
	}
}

func TestEgressLimitMetersPieces(t *testing.T) {
	b := newBlob(t, 256<<10, 64<<10)
	k := newKeys(t)
	lim := rate.NewLimiter(rate.Inf, 32<<10)
	ts := startServer(t, ServerConfig{Egress: lim}, newFileSource(t, b), k.v, nil)
	c := ts.dial(t, nil, b, k, ClientConfig{})
	fetchAll(t, c, b)
	c.Close()
	if err := ts.connEnd(t); err != nil {
		t.Fatalf("server connection ended with %v; want a clean close", err)
	}
	// With an infinite rate the bucket is not drained, but every round is
	// at most its burst: a burst smaller than a piece still moves it.
	if st := ts.Stats(); st.SendfileBytes != int64(len(b.data)) {
		t.Fatalf("stats %+v; want all bytes sent in rounds of the limiter's burst", st)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPieceWantedAgainAfterACancel(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	t.Run("the server dropped it", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		if err := c.Cancel(0); err != nil {
			t.Fatal(err)
		}
		fs.expectFrame(t, FrameCancel)
		if err := c.Request(0); err != nil {
			t.Fatalf("requesting a cancelled piece again: %v", err)
		}
		fs.send(t, Frame{Type: FrameReject, Index: 0, Reason: ReasonCancelled})
		if f := fs.expectFrame(t, FrameRequest); f.Index != 0 {
			t.Fatalf("request of piece %d; want 0 asked again by the connection", f.Index)
		}
		if err := c.Request(0); !errors.Is(err, ErrRequested) {
			t.Fatalf("requesting piece 0 while it is asked again: %v; want ErrRequested", err)
		}
		expectAskedAgainAnswered(t, fs, c, b, 0, 1)
	})
	t.Run("cancelled again before the server dropped it", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		if err := c.Cancel(0); err != nil {
			t.Fatal(err)
		}
		fs.expectFrame(t, FrameCancel)
		if err := c.Request(0); err != nil {
			t.Fatal(err)
		}
		if err := c.Cancel(0); err != nil {
			t.Fatal(err)
		}
		fs.send(t, Frame{Type: FrameReject, Index: 0, Reason: ReasonCancelled})
		// Withdrawn: not asked again. Piece 1's answer shows the reject
		// was read; then the next frame from the client is its request of
		// piece 2, and piece 0 takes a request again.
		fs.send(t, Frame{Type: FramePiece, Index: 1, Length: uint32(b.meta.PieceSize(1))})
		fs.write(t, b.piece(1))
		if r, ok := nextResult(t, c); !ok || r.Index != 1 {
			t.Fatalf("result %v (conn %v); want piece 1", r, c.Err())
		}
		if err := c.Request(2); err != nil {
			t.Fatal(err)
		}
		if f := fs.expectFrame(t, FrameRequest); f.Index != 2 {
			t.Fatalf("request of piece %d; want 2 (0 was withdrawn)", f.Index)
		}
		if err := c.Request(0); err != nil {
			t.Fatalf("requesting the withdrawn piece 0 again: %v", err)
		}
	})
	t.Run("the server sent it", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		if err := c.Cancel(1); err != nil {
			t.Fatal(err)
		}
		if err := c.Request(1); err != nil {
			t.Fatal(err)
		}
		fs.expectFrame(t, FrameCancel)
		fs.send(t, Frame{Type: FramePiece, Index: 1, Length: uint32(b.meta.PieceSize(1))})
		fs.write(t, b.piece(1))
		if r, ok := nextResult(t, c); !ok || r.Index != 1 || !bytes.Equal(r.Data, b.piece(1)) {
			t.Fatalf("result %v (conn %v); want piece 1 delivered after all", r, c.Err())
		}
	})
}

func TestIngressLimitMetersPiecesReceived(t *testing.T) {
	b := newBlob(t, 768<<10, 256<<10)
	k := newKeys(t)
	ts := startServer(t, ServerConfig{}, newFileSource(t, b), k.v, nil)
	// A bucket of 1 MiB refilling at one byte a second: what the pieces
	// take out of it stays out for the test's length.
	lim := rate.NewLimiter(1, 1<<20)
	c := ts.dial(t, nil, b, k, ClientConfig{Ingress: lim})
	fetchAll(t, c, b)
	if left := lim.Tokens(); left > float64(1<<20-len(b.data))+60 {
		t.Fatalf("%.0f tokens left in a 1 MiB ingress bucket after receiving %d bytes; want the bytes taken from it", left, len(b.data))
	}
}
