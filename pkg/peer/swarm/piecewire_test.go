package swarm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// newPieceSwarm starts a swarm with the piece data path on and returns it
// with the origin key its capabilities are checked against.
func newPieceSwarm(t *testing.T, listen string) (*Swarm, *auth.Key) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.PieceListen = listen
	return newPieceSwarmWith(t, cfg, Options{})
}

// newPieceSwarmWith is newPieceSwarm with cfg and opts (their peer id and
// Keys are set here, and Logger unless given).
func newPieceSwarmWith(t *testing.T, cfg Config, opts Options) (*Swarm, *auth.Key) {
	t.Helper()
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg.PeerID = "agent-under-test"
	opts.Keys = auth.NewVerifier(key.Public())
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(cfg, t.TempDir(), 1<<30, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, key
}

// holdPieces puts a blob of n pieces of 256 KiB (the last one short) in
// s's store with the given pieces written, and returns its bytes and
// metainfo.
func holdPieces(t *testing.T, s *Swarm, n int, held ...int) ([]byte, *metainfo.Metainfo) {
	t.Helper()
	return holdPiecesOf(t, s, n, 256<<10, held...)
}

// holdPiecesOf is holdPieces with pieces of pieceLength bytes.
func holdPiecesOf(t *testing.T, s *Swarm, n int, pieceLength int64, held ...int) ([]byte, *metainfo.Metainfo) {
	t.Helper()
	data := make([]byte, int64(n)*pieceLength-100)
	_, _ = rand.NewChaCha8([32]byte{byte(n)}).Read(data)
	m, err := metainfo.Compute(bytes.NewReader(data), digest.FromBytes(data), int64(len(data)), pieceLength)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.Create(m); err != nil {
		t.Fatal(err)
	}
	for _, i := range held {
		off := m.PieceOffset(i)
		if err := s.store.WritePiece(m.Digest, i, data[off:off+m.PieceSize(i)]); err != nil {
			t.Fatal(err)
		}
	}
	return data, m
}

func TestHeldPiecesAreServedOnThePieceDataPath(t *testing.T) {
	s, key := newPieceSwarm(t, "127.0.0.1:0")
	data, m := holdPieces(t, s, 5, 0, 1, 2)
	tok, err := key.IssueCapability(m.Digest, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	md := s.pieceHeaders(metadata.MD{})
	if got := md.Get(peerwire.PieceHeader); len(got) != 1 || got[0] != s.piecePort {
		t.Fatalf("Exchange header %s = %v; want the piece port %s", peerwire.PieceHeader, got, s.piecePort)
	}
	c, err := piecewire.Dial(context.Background(), net.JoinHostPort("127.0.0.1", s.piecePort), nil, m, tok, piecewire.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range m.NumPieces() {
		if err := c.Request(i); err != nil {
			t.Fatal(err)
		}
	}
	var sent int64
	for range m.NumPieces() {
		r, ok := <-c.Results()
		if !ok {
			t.Fatalf("the piece connection ended: %v", c.Err())
		}
		off := m.PieceOffset(r.Index)
		switch {
		case r.Index <= 2 && !bytes.Equal(r.Data, data[off:off+m.PieceSize(r.Index)]):
			t.Fatalf("held piece %d: %v; want its bytes", r.Index, r)
		case r.Index > 2 && r.Reject != piecewire.ReasonNotHeld:
			t.Fatalf("piece %d, not held: %v; want rejected as not held", r.Index, r)
		}
		sent += int64(len(r.Data))
	}
	c.Close()
	// The upload is counted once its piece has gone out (Piece.Done), which
	// may come after the client has the bytes.
	eventually.True(t, "shoal_agent_uploaded_bytes_total to count the bytes sent", func() bool {
		return testutil.ToFloat64(s.metrics.uploaded) == float64(sent)
	})
	if b := s.up.Backlog(); b != 0 {
		t.Fatalf("uplink backlog %d after every piece went out; want 0", b)
	}
	// Counted before Done, so final once the upload was.
	if st := s.pieceServer.Stats(); st.SendfileBytes != sent || st.CopiedBytes != 0 {
		t.Fatalf("piece server sent %d bytes with sendfile and copied %d; want all %d with sendfile (the store hands over its file)",
			st.SendfileBytes, st.CopiedBytes, sent)
	}
}

func TestPieceDataPathRefusesAnotherBlobsCapability(t *testing.T) {
	s, key := newPieceSwarm(t, "127.0.0.1:0")
	_, m := holdPieces(t, s, 2, 0, 1)
	tok, err := key.IssueCapability(digest.FromString("another blob"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := piecewire.Dial(context.Background(), net.JoinHostPort("127.0.0.1", s.piecePort), nil, m, tok, piecewire.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Request(0); err != nil {
		t.Fatal(err)
	}
	if r, ok := <-c.Results(); ok {
		t.Fatalf("%v for a capability of another blob; want the connection refused", r)
	}
	if err := c.Err(); !errors.Is(err, piecewire.ErrDenied) {
		t.Fatalf("connection ended with %v; want ErrDenied", err)
	}
}

func TestPieceDataPathIsOnByDefaultOnThePeerListenersHost(t *testing.T) {
	t.Setenv(pieceListenEnv, "")
	cfg := DefaultConfig()
	s, _ := newPieceSwarmWith(t, cfg, Options{PeerListen: "127.0.0.1:7002"})
	if s.pieceServer == nil || s.piecePort == "" || s.piecePort == "0" {
		t.Fatalf("piece server %v on port %q with nothing configured; want one on a free port", s.pieceServer, s.piecePort)
	}
	if md := s.pieceHeaders(metadata.MD{}); len(md.Get(peerwire.PieceHeader)) != 1 {
		t.Fatalf("Exchange header %s = %v; want the piece port, so peers fetch over it", peerwire.PieceHeader, md.Get(peerwire.PieceHeader))
	}
	// On the peer listener's host: a loopback peer listener keeps the
	// pieces on loopback too.
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", s.piecePort))
	if err != nil {
		t.Fatalf("dialing the default piece port on the peer listener's host: %v", err)
	}
	_ = c.Close()
}

func TestPieceDataPathOff(t *testing.T) {
	for name, set := range map[string]func(*testing.T, *Config){
		"configured": func(_ *testing.T, c *Config) { c.PieceListen = PieceListenOff },
		"from the environment": func(t *testing.T, _ *Config) {
			t.Setenv(pieceListenEnv, PieceListenOff)
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(pieceListenEnv, "")
			cfg := DefaultConfig()
			set(t, &cfg)
			s, _ := newPieceSwarmWith(t, cfg, Options{})
			if s.pieceServer != nil || s.piecePort != "" {
				t.Fatalf("piece server on port %q with pieceListen off; want none", s.piecePort)
			}
			if md := s.pieceHeaders(metadata.MD{}); len(md.Get(peerwire.PieceHeader)) != 0 {
				t.Fatalf("Exchange header %s = %v with the path off; want none, so peers keep pieces on the stream", peerwire.PieceHeader, md.Get(peerwire.PieceHeader))
			}
		})
	}
}

func TestPieceDataPathFromTheEnvironment(t *testing.T) {
	t.Setenv(pieceListenEnv, "127.0.0.1:0")
	s, _ := newPieceSwarm(t, "")
	if s.pieceServer == nil || s.piecePort == "" {
		t.Fatalf("no piece server with %s set", pieceListenEnv)
	}
}

func TestPieceListenMustBeAnAddressOrOff(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PieceListen = "7004"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "pieceListen") {
		t.Fatalf("Validate with pieceListen %q: %v; want it named as neither host:port nor off", cfg.PieceListen, err)
	}
}

func TestPieceDataPathBoundsConnectionsPerBlobAsStreams(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PieceListen = "127.0.0.1:0"
	cfg.MaxUploadsPerBlob, cfg.MaxPeersPerBlob = 1, 1
	s, key := newPieceSwarmWith(t, cfg, Options{})
	_, m := holdPieces(t, s, 2, 0, 1)
	tok, err := key.IssueCapability(m.Digest, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(i int) (*piecewire.Conn, piecewire.Result, error) {
		c, err := piecewire.Dial(context.Background(), net.JoinHostPort("127.0.0.1", s.piecePort), nil, m, tok, piecewire.ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if err := c.Request(i); err != nil {
			t.Fatal(err)
		}
		r, ok := <-c.Results()
		if !ok {
			return c, r, c.Err()
		}
		return c, r, nil
	}
	// The agent that opened the one stream maxUploadsPerBlob allows, and
	// the one this agent opened a stream to (maxPeersPerBlob), dialing
	// back: a refused piece connection would end its stream.
	if _, r, err := fetch(0); err != nil || r.Data == nil {
		t.Fatalf("the first piece connection for the blob: %v, %v; want its piece", r, err)
	}
	if _, r, err := fetch(1); err != nil || r.Data == nil {
		t.Fatalf("a second piece connection with maxUploadsPerBlob and maxPeersPerBlob 1: %v, %v; want its piece (both ends of a stream dial)", r, err)
	}
	var re *piecewire.RemoteError
	if _, r, err := fetch(1); !errors.As(err, &re) || re.Code != piecewire.CodeUnavailable {
		t.Fatalf("a third piece connection with maxUploadsPerBlob and maxPeersPerBlob 1: %v, %v; want it refused as unavailable", r, err)
	}
}

// scriptedPieceServer is a peer's piece server driven by the test: it
// reads what the agent sends and answers what the test tells it to.
type scriptedPieceServer struct {
	nc net.Conn
	br *bufio.Reader
}

// dialScripted opens a piece connection for s's conns to a scripted
// server, which has read its preface.
func dialScripted(t *testing.T, s *Swarm, key *auth.Key, m *metainfo.Metainfo) (*piecewire.Conn, *scriptedPieceServer) {
	t.Helper()
	return dialScriptedWith(t, s, key, m, piecewire.ClientConfig{Buffer: s.store.PieceBuffer})
}

// dialScriptedWith is dialScripted with the client's configuration cfg.
func dialScriptedWith(t *testing.T, s *Swarm, key *auth.Key, m *metainfo.Metainfo, cfg piecewire.ClientConfig) (*piecewire.Conn, *scriptedPieceServer) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tok, err := key.IssueCapability(m.Digest, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := piecewire.Dial(t.Context(), l.Addr().String(), nil, m, tok, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pw.Close() })
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	ps := &scriptedPieceServer{nc: nc, br: bufio.NewReader(nc)}
	var pre [len(piecewire.Preface)]byte
	if _, err := io.ReadFull(ps.br, pre[:]); err != nil || pre != piecewire.Preface {
		t.Fatalf("preface %q, %v", pre[:], err)
	}
	return pw, ps
}

// expect reads the agent's next frame and checks it is of type typ for
// piece i.
func (ps *scriptedPieceServer) expect(t *testing.T, typ piecewire.FrameType, i int, why string) {
	t.Helper()
	f, err := piecewire.ReadFrame(ps.br)
	if err != nil || f.Type != typ || f.Index != uint32(i) {
		t.Fatalf("%s: the agent sent %+v, %v; want a %s of piece %d", why, f, err, typ, i)
	}
}

func (ps *scriptedPieceServer) send(t *testing.T, f piecewire.Frame, raw []byte) {
	t.Helper()
	b, err := piecewire.AppendFrame(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.nc.Write(append(b, raw...)); err != nil {
		t.Fatal(err)
	}
}

// awaitStored waits for dl's first piece event and checks it is piece i,
// stored.
func awaitStored(t *testing.T, dl *download, i int) {
	t.Helper()
	var evs []any
	eventually.True(t, fmt.Sprintf("piece %d to reach the download", i), func() bool {
		evs = append(evs, pieceEvents(dl)...)
		return len(evs) > 0
	})
	if p, ok := evs[0].(evPiece); !ok || p.piece != i || p.err != nil {
		t.Fatalf("the download got %#v; want piece %d, stored", evs, i)
	}
}

// A piece connection writes its pieces into the store as they arrive: the
// agent holds no buffer of a piece's size for them (docs/agent.md,
// "Memory").
func TestPiecesComeIntoTheStoreWithoutAPieceBuffer(t *testing.T) {
	s, key := newPieceSwarm(t, "")
	data, m := holdPieces(t, s, 3)
	pw, ps := dialScriptedWith(t, s, key, m, s.pieceClientConfig(m, func() {}))
	var mu sync.Mutex
	var answers []piecewire.Result
	s.pieceAnswered = func(_ *conn, r piecewire.Result) {
		mu.Lock()
		answers = append(answers, r)
		mu.Unlock()
	}
	c, _ := runConnWith(t, s, m, false, pw)
	dl := attachDownload(c)
	c.request(1)
	ps.expect(t, piecewire.FrameRequest, 1, "asking for piece 1")
	off, size := m.PieceOffset(1), m.PieceSize(1)
	ps.send(t, piecewire.Frame{Type: piecewire.FramePiece, Index: 1, Length: uint32(size)}, data[off:off+size])
	awaitStored(t, dl, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(answers) != 1 || answers[0].Sink == nil || answers[0].Data != nil {
		t.Fatalf("piece connection answers %v; want piece 1 written as it came (a Sink), not in a buffer", answers)
	}
	got, err := s.store.ReadPiece(m.Digest, 1)
	if err != nil || !bytes.Equal(got, data[off:off+size]) {
		t.Fatalf("piece 1 in the store: %v, equal %v", err, bytes.Equal(got, data[off:off+size]))
	}
}

// A piece arriving on the piece connection is progress for the download
// while its bytes come, not only once it is whole: the scheduler's piece
// timeout counts from the peer's last progress, and a piece crossing a
// slow or crowded link can take longer than that. Before, on the piece
// data path, such pieces were cut at the timeout over and over (an origin
// piece among them, left with the swarm for minutes by the seeder, which
// had sent it whole).
func TestPieceBytesArrivingOnThePieceConnectionAreProgress(t *testing.T) {
	s, key := newPieceSwarm(t, "")
	data, m := holdPiecesOf(t, s, 3, 1<<20) // pieces of four steps
	var cref atomic.Pointer[conn]
	pw, ps := dialScriptedWith(t, s, key, m, s.pieceClientConfig(m, func() { cref.Load().receiving() }))
	c, _ := runConnWith(t, s, m, false, pw)
	cref.Store(c)
	dl := attachDownload(c)
	c.request(1)
	ps.expect(t, piecewire.FrameRequest, 1, "asking for piece 1")
	off, size := m.PieceOffset(1), m.PieceSize(1)
	ps.send(t, piecewire.Frame{Type: piecewire.FramePiece, Index: 1, Length: uint32(size)}, data[off:off+size/2])
	select {
	case ev := <-dl.events:
		if p, ok := ev.(evProgress); !ok || p.c != c {
			t.Fatalf("the download got %#v while half of piece 1 was in; want progress from the conn", ev)
		}
	case <-time.After(time.Minute):
		t.Fatal("no progress reached the download while half of piece 1 was in")
	}
	if _, err := ps.nc.Write(data[off+size/2 : off+size]); err != nil {
		t.Fatal(err)
	}
	awaitStored(t, dl, 1)
}

// TestPieceCancelledAndAskedAgainBeforeItsCancelledRejectIsHandled: a piece
// cancelled and wanted again before the server's cancelled reject comes is
// asked for again once, by the piece connection (the conn used to re-ask
// on the reject, and asked twice when a cancel and a request of its own had
// come between).
func TestPieceCancelledAndAskedAgainBeforeItsCancelledRejectIsHandled(t *testing.T) {
	s, key := newPieceSwarm(t, "")
	data, m := holdPieces(t, s, 4)
	pw, ps := dialScripted(t, s, key, m)
	c, _ := runConnWith(t, s, m, false, pw)
	dl := attachDownload(c)

	c.request(1)
	ps.expect(t, piecewire.FrameRequest, 1, "asking for piece 1")
	c.cancelRequest(1)
	ps.expect(t, piecewire.FrameCancel, 1, "cancelling piece 1")
	c.request(1) // wanted again: no frame, the answer will do
	ps.send(t, piecewire.Frame{Type: piecewire.FrameReject, Index: 1, Reason: piecewire.ReasonCancelled}, nil)
	// The server dropped it: the piece connection asks again.
	ps.expect(t, piecewire.FrameRequest, 1, "piece 1 asked for again after its cancelled reject")
	off, size := m.PieceOffset(1), m.PieceSize(1)
	ps.send(t, piecewire.Frame{Type: piecewire.FramePiece, Index: 1, Length: uint32(size)}, data[off:off+size])

	awaitStored(t, dl, 1)
	// A marker: a second request of piece 1 would come before it.
	c.request(2)
	ps.expect(t, piecewire.FrameRequest, 2, "the next request after piece 1 (piece 1 asked once)")
	select {
	case <-c.closed:
		t.Fatal("the stream was closed")
	default:
	}
}

// TestRequestMeetingAnIdleClosedPieceConnectionGoesOnTheStream: the peer's
// piece server closes a connection idle for its IdleTimeout just as the
// agent sends a request on it (the request lands after the close, or its
// write fails). The piece connection is gone, not broken: the request is
// asked again on the stream, which stays up and delivers the piece.
func TestRequestMeetingAnIdleClosedPieceConnectionGoesOnTheStream(t *testing.T) {
	for _, writeFails := range []bool{false, true} {
		t.Run(fmt.Sprintf("write fails %v", writeFails), func(t *testing.T) {
			s, key := newPieceSwarm(t, "")
			data, m := holdPieces(t, s, 4)
			srv := piecewire.NewServer(piecewire.ServerConfig{IdleTimeout: time.Millisecond, Logger: s.log}, storeSource{s}, auth.NewVerifier(key.Public()))
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cl := &closeNotifyingListener{Listener: l, closed: make(chan struct{}, 1)}
			go func() { _ = srv.Serve(cl) }()
			t.Cleanup(func() { _ = srv.Close() })

			tok, err := key.IssueCapability(m.Digest, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			// The agent's side reads nothing until the request went out:
			// it has not seen the close yet when it sends it.
			nc := &heldConn{Conn: raw, readable: make(chan struct{})}
			pw, err := piecewire.NewConn(nc, m, tok, piecewire.ClientConfig{Buffer: s.store.PieceBuffer})
			if err != nil {
				t.Fatal(err)
			}
			c, st := runConnWith(t, s, m, false, pw)
			dl := attachDownload(c)

			select {
			case <-cl.closed:
			case <-time.After(eventually.Timeout):
				t.Fatal("the piece server did not close the idle connection")
			}
			nc.broken.Store(writeFails)
			c.request(0)
			close(nc.readable)
			expect(t, st, "request 0", "piece 0, asked on a piece connection its server had closed")
			size := m.PieceSize(0)
			st.send(t, chunkMsg(0, 0, data[:size]))
			var evs []any
			eventually.True(t, "piece 0 to reach the download from the stream", func() bool {
				evs = append(evs, pieceEvents(dl)...)
				return len(evs) > 0
			})
			if p, ok := evs[0].(evPiece); !ok || p.piece != 0 || p.err != nil {
				t.Fatalf("the download got %#v; want piece 0, stored", evs)
			}
			// Later requests go on the stream too.
			c.request(1)
			expect(t, st, "request 1", "the next piece after the piece connection is gone")
		})
	}
}

// closeNotifyingListener tells closed when a connection it accepted is
// closed.
type closeNotifyingListener struct {
	net.Listener
	closed chan struct{}
}

func (l *closeNotifyingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &notifyingConn{Conn: nc, closed: l.closed}, nil
}

type notifyingConn struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *notifyingConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.closed <- struct{}{} })
	return err
}

// heldConn is a connection whose reads wait for readable, and whose writes
// fail as on a socket the other end reset (EPIPE) while broken.
type heldConn struct {
	net.Conn
	broken   atomic.Bool
	readable chan struct{}
}

func (c *heldConn) Write(b []byte) (int, error) {
	if c.broken.Load() {
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}
	}
	return c.Conn.Write(b)
}

func (c *heldConn) Read(b []byte) (int, error) {
	<-c.readable
	return c.Conn.Read(b)
}

// TestPieceReaderThatStopsReadingIsDropped: a peer that asks the agent's
// piece server for pieces and stops reading mid-transfer is dropped once a
// write makes no progress for pieceTimeout. The piece it held is let go
// (the uplink backlog returns to zero: the agent does not go on turning
// others away as busy for it), and the next peer is served.
func TestPieceReaderThatStopsReadingIsDropped(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PieceListen = "127.0.0.1:0"
	cfg.PieceTimeout, cfg.OriginDeferral = 500*time.Millisecond, 0
	logs := &lockedBuffer{}
	s, key := newPieceSwarmWith(t, cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	// More than loopback's socket buffers hold, so that the writes stall.
	const pieceLength, n = 1 << 20, 16
	data := make([]byte, n*pieceLength)
	_, _ = rand.NewChaCha8([32]byte{16}).Read(data)
	m, err := metainfo.Compute(bytes.NewReader(data), digest.FromBytes(data), int64(len(data)), pieceLength)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.Create(m); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := s.store.WritePiece(m.Digest, i, data[i*pieceLength:(i+1)*pieceLength]); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := key.IssueCapability(m.Digest, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", s.piecePort)

	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.(*net.TCPConn).SetReadBuffer(4096)
	out := piecewire.Preface[:]
	for i := range n {
		out, err = piecewire.AppendFrame(out, piecewire.Frame{Type: piecewire.FrameRequest, Index: uint32(i), Digest: m.Digest.String(), Capability: tok})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nc.Write(out); err != nil {
		t.Fatal(err)
	}
	// Mid-transfer: the first piece's header and a few of its bytes, then
	// nothing more is read.
	br := bufio.NewReaderSize(nc, 4096)
	if f, err := piecewire.ReadFrame(br); err != nil || f.Type != piecewire.FramePiece {
		t.Fatalf("first answer %+v, %v; want a piece", f, err)
	}
	if _, err := io.ReadFull(br, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}

	eventually.True(t, "the agent to drop the peer that stopped reading", func() bool {
		return strings.Contains(logs.String(), "the peer stopped reading")
	})
	// The connection's end is logged after its last piece's Done.
	if b := s.up.Backlog(); b != 0 {
		t.Fatalf("uplink backlog %d after the peer that stopped reading was dropped; want 0", b)
	}
	c, err := piecewire.Dial(t.Context(), addr, nil, m, tok, piecewire.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Request(n - 1); err != nil {
		t.Fatal(err)
	}
	if r, ok := <-c.Results(); !ok || !bytes.Equal(r.Data, data[(n-1)*pieceLength:]) {
		t.Fatalf("the next peer got %v (%v); want piece %d", r, c.Err(), n-1)
	}
}

// lockedBuffer is a log's destination that tests read while it is written.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRequestBeyondAFullPieceConnectionGoesOnTheStream: cancelled requests
// stay outstanding on a piece connection until their answers come, which a
// slow piece ahead of them holds back, and the scheduler asks for more
// meanwhile. A request beyond what the piece connection takes goes on the
// stream (it used to end the stream: a slow but healthy peer lost).
func TestRequestBeyondAFullPieceConnectionGoesOnTheStream(t *testing.T) {
	s, key := newPieceSwarm(t, "")
	_, m := holdPieces(t, s, 10)
	pw, ps := dialScripted(t, s, key, m)
	c, st := runConnWith(t, s, m, false, pw)
	dl := attachDownload(c)

	// All cancelled but the last, which is still wanted.
	full := piecewire.DefaultClientConfig().MaxOutstanding
	for i := range full {
		c.request(i)
		ps.expect(t, piecewire.FrameRequest, i, "asking for a piece")
		if i < full-1 {
			c.cancelRequest(i)
			ps.expect(t, piecewire.FrameCancel, i, "cancelling it")
		}
	}
	c.request(full)
	expect(t, st, fmt.Sprint("request ", full), "a request while the piece connection has as many outstanding as it takes")

	// Answers free places there: once the wanted one's is in, the
	// cancelled one's before it is too.
	ps.send(t, piecewire.Frame{Type: piecewire.FrameReject, Index: 0, Reason: piecewire.ReasonCancelled}, nil)
	ps.send(t, piecewire.Frame{Type: piecewire.FrameReject, Index: uint32(full - 1), Reason: piecewire.ReasonBusy}, nil)
	var evs []any
	eventually.True(t, "the busy reject to reach the download", func() bool {
		evs = append(evs, pieceEvents(dl)...)
		return len(evs) > 0
	})
	if r, ok := evs[0].(evRejected); !ok || r.piece != full-1 {
		t.Fatalf("the download got %#v; want piece %d rejected", evs, full-1)
	}
	c.request(full + 1)
	ps.expect(t, piecewire.FrameRequest, full+1, "a request once the piece connection has room")
	select {
	case <-c.closed:
		t.Fatal("the stream was closed")
	default:
	}
}
