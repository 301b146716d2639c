package swarm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
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

// newPieceSwarmWith is newPieceSwarm with cfg and opts (their peer id,
// Keys and Logger are set here).
func newPieceSwarmWith(t *testing.T, cfg Config, opts Options) (*Swarm, *auth.Key) {
	t.Helper()
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg.PeerID = "agent-under-test"
	opts.Keys = auth.NewVerifier(key.Public())
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
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
	const pieceLength = 256 << 10
	data := make([]byte, n*pieceLength-100)
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
