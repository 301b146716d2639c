package swarm

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/scheduler"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// openStreamFrom opens an Exchange stream to s as the agent peerID holding
// every piece of m would, naming piecePort as its piece port, and reads
// the handshake reply.
func openStreamFrom(t *testing.T, s *Swarm, tok string, m *metainfo.Metainfo, peerID, piecePort string) {
	t.Helper()
	g := grpc.NewServer()
	s.Register(g)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(gl) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx := metadata.AppendToOutgoingContext(auth.WithCapability(t.Context(), tok), peerwire.PieceHeader, piecePort)
	st, err := peerpb.NewPeerClient(cc).Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all := metainfo.NewBitfield(m.NumPieces())
	all.SetAll()
	if err := st.Send(handshakeMessage(m.Digest, peerID, all)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("handshake reply: %v", err)
	}
}

// grantBlob gives s a capability for m's blob, signed with key, and
// returns it.
func grantBlob(t *testing.T, s *Swarm, key *auth.Key, m *metainfo.Metainfo) string {
	t.Helper()
	tok, err := key.IssueCapability(m.Digest, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.grant(m.Digest, tok)
	return tok
}

// testDownload makes a download of m's blob s's running one, its events
// read by the test rather than a loop; prepared: with the metainfo and
// scheduler that prepare sets.
func testDownload(t *testing.T, s *Swarm, m *metainfo.Metainfo, prepared bool) *download {
	t.Helper()
	s.mu.Lock()
	bs := s.blobLocked(m.Digest)
	dl := newDownload(s, bs)
	if prepared {
		sched, err := scheduler.New(m, metainfo.NewBitfield(m.NumPieces()), s.sched)
		if err != nil {
			s.mu.Unlock()
			t.Fatal(err)
		}
		dl.meta, dl.sched = m, sched
	}
	bs.dl = dl
	s.mu.Unlock()
	t.Cleanup(func() {
		s.mu.Lock()
		bs.dl = nil
		s.mu.Unlock()
		close(dl.done)
	})
	return dl
}

// TestStreamArrivingWhileTheDownloadPreparesDialsBack: a peer may open a
// stream as soon as the blob's metainfo is in the piece store, while the
// download that put it there is still preparing and has none of its own.
// The piece connection dialed back to the peer is for the blob all the
// same, and carries pieces (it was opened without metainfo, and the first
// request on it panicked).
func TestStreamArrivingWhileTheDownloadPreparesDialsBack(t *testing.T) {
	s, key := newPieceSwarm(t, "127.0.0.1:0")
	data, m := holdPieces(t, s, 4)
	tok := grantBlob(t, s, key, m)
	// A download whose loop has not set its metainfo yet, as while
	// prepare runs.
	dl := testDownload(t, s, m, false)

	// The peer's piece server, holding the whole blob.
	gate := make(chan struct{})
	close(gate)
	src := &gatedSource{data: data, meta: m, gate: gate, opened: make(chan int, 8)}
	_, piecePort, _ := net.SplitHostPort(servePieces(t, src, key))

	// The peer opens a stream to s, naming its piece port.
	openStreamFrom(t, s, tok, m, "the-peer", piecePort)

	c := joinedConn(t, dl)
	// As the download's loop does once it accepted the peer.
	c.connectPieces()
	eventually.True(t, "a piece connection dialed back to the peer that named its piece port", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.pw != nil
	})
	c.attach(dl)
	c.request(1)
	var got []any
	eventually.True(t, "piece 1 to arrive over the piece connection", func() bool {
		got = append(got, pieceEvents(dl)...)
		return len(got) > 0
	})
	if p, ok := got[0].(evPiece); !ok || p.piece != 1 || p.err != nil {
		t.Fatalf("the download got %#v; want piece 1, stored", got[0])
	}
	piece, err := s.store.ReadPiece(m.Digest, 1)
	if err != nil || !bytes.Equal(piece, data[m.PieceOffset(1):m.PieceOffset(1)+m.PieceSize(1)]) {
		t.Fatalf("piece 1 in the store: %d bytes, %v; want its bytes", len(piece), err)
	}
}

// joinedConn returns the conn of the next join posted to dl.
func joinedConn(t *testing.T, dl *download) *conn {
	t.Helper()
	select {
	case ev := <-dl.events:
		j, ok := ev.(evJoined)
		if !ok {
			t.Fatalf("the download got %#v; want a stream's join", ev)
		}
		return j.c
	case <-time.After(eventually.Timeout):
		t.Fatal("the stream never joined the download")
		return nil
	}
}

// TestRefusedPeerGetsNoPieceConnection: the piece port a peer names is
// dialed only once the download accepts the peer. One it refuses (here
// blacklisted) keeps its stream for uploads, and no piece connection that
// would sit idle; one it accepts gets its piece connection.
func TestRefusedPeerGetsNoPieceConnection(t *testing.T) {
	s, key := newPieceSwarm(t, "127.0.0.1:0")
	data, m := holdPieces(t, s, 4)
	tok := grantBlob(t, s, key, m)
	// A running download, driven here as its loop would.
	dl := testDownload(t, s, m, true)
	port := func(l *countingListener) string {
		_, p, _ := net.SplitHostPort(l.Addr().String())
		return p
	}
	gate := make(chan struct{})
	close(gate)
	refusedPieces := servePiecesCounting(t, &gatedSource{data: data, meta: m, gate: gate, opened: make(chan int, 8)}, key)
	acceptedPieces := servePiecesCounting(t, &gatedSource{data: data, meta: m, gate: gate, opened: make(chan int, 8)}, key)
	s.addBlacklist("refused-peer")

	openStreamFrom(t, s, tok, m, "refused-peer", port(refusedPieces))
	refused := joinedConn(t, dl)
	dl.join(time.Now(), refused)
	openStreamFrom(t, s, tok, m, "accepted-peer", port(acceptedPieces))
	accepted := joinedConn(t, dl)
	dl.join(time.Now(), accepted)

	eventually.True(t, "the accepted peer's piece connection", func() bool {
		accepted.mu.Lock()
		defer accepted.mu.Unlock()
		return accepted.pw != nil
	})
	// The dial returns once the connection is up and the preface written,
	// which may be before the server's Accept returns.
	eventually.True(t, "the accepted peer's piece server taking the connection", func() bool {
		return acceptedPieces.accepted.Load() >= 1
	})
	if n := acceptedPieces.accepted.Load(); n != 1 {
		t.Fatalf("the accepted peer's piece server took %d connections; want 1", n)
	}
	refused.mu.Lock()
	pw, dialed := refused.pw, refused.stopDial != nil
	refused.mu.Unlock()
	select {
	case <-refused.closed:
		t.Fatal("the refused peer's incoming stream was closed; want it kept for the peer's own download")
	default:
	}
	if pw != nil || dialed || refusedPieces.accepted.Load() != 0 {
		t.Fatalf("a peer the download refused: piece connection %v, dial started %v, %d connections at its piece server; want none",
			pw, dialed, refusedPieces.accepted.Load())
	}
}

// TestUnreachablePiecePortDoesNotHoldTheFirstPieces: while the peer's piece
// port does not answer (a firewall dropping it), the first requests go on
// the stream after the short wait for it, and their pieces arrive there,
// long before the dial gives up (here: never, within the test).
func TestUnreachablePiecePortDoesNotHoldTheFirstPieces(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PieceListen = "127.0.0.1:0"
	cfg.DialTimeout = time.Hour
	s, _ := newPieceSwarmWith(t, cfg, Options{})
	data, m := holdPieces(t, s, 4)
	dialing, gaveUp := make(chan struct{}), make(chan struct{})
	s.dialPiece = func(ctx context.Context, _ string, _ *tls.Config, _ *metainfo.Metainfo, _ string, _ piecewire.ClientConfig) (*piecewire.Conn, error) {
		close(dialing)
		<-ctx.Done()
		close(gaveUp)
		return nil, ctx.Err()
	}
	c, st := runConn(t, s, m, false)
	c.pieceAddr = "192.0.2.1:7004"
	dl := attachDownload(c)
	c.connectPieces()
	select {
	case <-dialing:
	case <-time.After(eventually.Timeout):
		t.Fatal("the piece port was never dialed")
	}

	c.request(0)
	expect(t, st, "request 0", "the first request while the piece port does not answer")
	size := m.PieceSize(0)
	st.send(t, chunkMsg(0, 0, data[:size]))
	var evs []any
	eventually.True(t, "piece 0 to arrive on the stream", func() bool {
		evs = append(evs, pieceEvents(dl)...)
		return len(evs) > 0
	})
	if p, ok := evs[0].(evPiece); !ok || p.piece != 0 || p.err != nil {
		t.Fatalf("the download got %#v; want piece 0, stored", evs)
	}
	c.request(1)
	expect(t, st, "request 1", "a later request while the piece port still does not answer")
	select {
	case <-gaveUp:
		t.Fatal("the dial ended before the pieces came; the test shows nothing")
	default:
	}
}

// TestRequestsWaitForThePieceConnection: requests made while the piece
// connection is being dialed go on it once it is up, not on the stream
// (whose pieces would go over gRPC).
func TestRequestsWaitForThePieceConnection(t *testing.T) {
	s, key := newPieceSwarm(t, "127.0.0.1:0")
	s.pieceGrace = time.Hour
	data, m := holdPieces(t, s, 4)
	grantBlob(t, s, key, m)
	gate := make(chan struct{})
	close(gate)
	src := &gatedSource{data: data, meta: m, gate: gate, opened: make(chan int, 8)}
	addr := servePieces(t, src, key)
	up := make(chan struct{})
	s.dialPiece = func(ctx context.Context, _ string, tc *tls.Config, meta *metainfo.Metainfo, capability string, cfg piecewire.ClientConfig) (*piecewire.Conn, error) {
		<-up
		return piecewire.Dial(ctx, addr, tc, meta, capability, cfg)
	}
	c, st := runConn(t, s, m, false)
	c.pieceAddr = addr
	dl := attachDownload(c)
	c.connectPieces()

	c.request(0)
	c.have(3) // a marker: a request sent on the stream would come before it
	expect(t, st, "have 3", "a request made while the piece connection is dialed waits for it")
	close(up)
	var evs []any
	eventually.True(t, "piece 0 to arrive", func() bool {
		evs = append(evs, pieceEvents(dl)...)
		return len(evs) > 0
	})
	if p, ok := evs[0].(evPiece); !ok || p.piece != 0 || p.err != nil {
		t.Fatalf("the download got %#v; want piece 0, stored", evs)
	}
	if got := <-src.opened; got != 0 {
		t.Fatalf("the piece server was asked for piece %d; want 0", got)
	}
}

// TestPieceConnectionUpAfterTheDownloadLetThePeerGoIsClosed: a piece
// connection whose dial completes as the download lets the peer go
// (detach: the download finished, the stream kept for the peer's own
// download) is closed, as the dial's cancel intends: kept, it would sit
// idle beside the stream, holding one of the connections the peer's piece
// server allows per blob until its idle timeout.
func TestPieceConnectionUpAfterTheDownloadLetThePeerGoIsClosed(t *testing.T) {
	s, key := newPieceSwarm(t, "127.0.0.1:0")
	data, m := holdPieces(t, s, 4)
	grantBlob(t, s, key, m)
	gate := make(chan struct{})
	close(gate)
	addr := servePieces(t, &gatedSource{data: data, meta: m, gate: gate, opened: make(chan int, 8)}, key)
	up := make(chan struct{})
	dialed := make(chan *piecewire.Conn, 1)
	s.dialPiece = func(ctx context.Context, _ string, tc *tls.Config, meta *metainfo.Metainfo, capability string, cfg piecewire.ClientConfig) (*piecewire.Conn, error) {
		<-up
		// Connected just before the cancel could stop it.
		pc, err := piecewire.Dial(context.WithoutCancel(ctx), addr, tc, meta, capability, cfg)
		if err == nil {
			dialed <- pc
		}
		return pc, err
	}
	c, _ := runConn(t, s, m, false)
	c.pieceAddr = addr
	attachDownload(c)
	c.connectPieces()
	c.detach()
	close(up)

	var pc *piecewire.Conn
	select {
	case pc = <-dialed:
	case <-time.After(eventually.Timeout):
		t.Fatal("the piece port was never dialed")
	}
	select {
	case <-pc.Done():
	case <-time.After(eventually.Timeout):
		t.Fatal("a piece connection up after the download let the peer go was kept open beside the stream; want it closed")
	}
	c.mu.Lock()
	pw := c.pw
	c.mu.Unlock()
	if pw != nil {
		t.Fatal("the conn the download let go has a piece connection; want none")
	}
	select {
	case <-c.closed:
		t.Fatal("the stream was closed; want it kept for the peer's own download")
	default:
	}
}
