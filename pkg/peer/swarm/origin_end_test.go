package swarm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"path"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/origin/seeder"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// originUnderTest is an origin seeder on 127.0.0.1 serving one blob, with
// its metrics.
type originUnderTest struct {
	addr string
	key  *auth.Key
	reg  *prometheus.Registry
	data []byte
	d    digest.Digest
}

// startOrigin serves a blob of size bytes from an origin seeder; pieceListen is its piece data path ("off" keeps pieces on
// the streams).
func startOrigin(t *testing.T, size int, pieceListen string) *originUnderTest {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{3}).Read(data)
	d := digest.FromBytes(data)
	drv := inmemory.New()
	h := d.Encoded()
	if err := drv.PutContent(context.Background(), path.Join("/docker/registry/v2/blobs", string(d.Algorithm()), h[:2], h, "data"), data); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := seeder.DefaultConfig()
	cfg.Listen = ln.Addr().String()
	cfg.CacheDir = t.TempDir()
	cfg.PieceListen = pieceListen
	key := auth.NewKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize)))
	reg := prometheus.NewRegistry()
	srv, err := seeder.New(cfg, drv, seeder.Options{Key: key, Registerer: reg, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	peerpb.RegisterPeerServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(func() {
		gs.Stop()
		_ = srv.Close()
	})
	return &originUnderTest{addr: ln.Addr().String(), key: key, reg: reg, data: data, d: d}
}

// metric sums the origin's samples of the metric name whose labels
// include want.
func (o *originUnderTest) metric(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := o.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue samples
				}
			}
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// pull reads the origin's blob through s and checks it.
func (o *originUnderTest) pull(t *testing.T, s *Swarm) {
	t.Helper()
	tok, err := o.key.IssueCapability(o.d, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Open(t.Context(), o.d, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := b.NewReader(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, o.data) {
		t.Fatal("the blob pulled differs from the origin's")
	}
}

// An agent that has pulled a blob ends its stream to the origin's seeder
// cleanly (its side closed, the seeder's answered to the end), not with a
// cancel: the seeder cannot tell a cancelled stream from a crashed agent,
// and frees every piece it gave the agent for the next one asking
// ("connection_broken"), to be sent again while the agent seeds them.
func TestAgentDoneWithTheOriginEndsItsStreamCleanly(t *testing.T) {
	for _, tc := range []struct{ name, pieces string }{
		{"stream", seeder.PieceListenOff},
		{"piece data path", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startOrigin(t, 10<<20+123, tc.pieces)
			cfg := DefaultConfig()
			cfg.PeerID = "agent-under-test"
			cfg.Seeders = []string{o.addr}
			cfg.PieceListen = "127.0.0.1:0"
			s, err := New(cfg, t.TempDir(), 1<<30, Options{Keys: auth.NewVerifier(o.key.Public()), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close(context.Background()) })
			o.pull(t, s)
			eventually.True(t, "the origin's streams and piece connections to end once the pull is done", func() bool {
				return o.metric(t, "shoal_origin_seeder_streams", nil) == 0 &&
					o.metric(t, "shoal_origin_seeder_piece_data_path_connections", nil) == 0
			})
			if n := o.metric(t, "shoal_origin_seeder_superseed_grants_freed_total", map[string]string{"reason": "connection_broken"}); n != 0 {
				t.Errorf("the seeder freed %.0f grants as connection_broken after the agent pulled the blob and let go; want none (the agent has them)", n)
			}
		})
	}
}

// An agent done with a peer while a piece it no longer wants is still
// being written on their piece connection closes its side and reads the
// piece to its end: the peer's write does not break (an origin seeder
// would free every piece given over the connection, as a crashed agent's).
func TestAgentDoneWithAPeerLetsThePieceBeingWrittenEnd(t *testing.T) {
	s, key := newPieceSwarm(t, "")
	const pieceLength = 4 << 20 // past the socket buffers
	data, m := createBlob(t, s, 2, pieceLength, 4)
	// The peer's piece server sends half of piece 0, then waits for gate.
	gate := make(chan struct{})
	sent := make(chan error, 1)
	src := doneSource{gatedSource: &gatedSource{data: data, meta: m, gate: gate, opened: make(chan int, 8)}, done: sent}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	el := &endListener{Listener: l, ended: make(chan struct{})}
	srv := piecewire.NewServer(piecewire.ServerConfig{Logger: s.log}, src, auth.NewVerifier(key.Public()))
	go func() { _ = srv.Serve(el) }()
	t.Cleanup(func() { _ = srv.Close() })
	pw := dialPieceServer(t, s, key, m, l.Addr().String())
	c, _ := runConnWith(t, s, m, false, pw)
	attachDownload(c)
	c.request(0)
	eventually.True(t, "half of piece 0 in from the peer's piece connection", func() bool {
		n, ok := pw.Arrived(0)
		return ok && n >= pieceLength/2
	})
	c.detach()
	c.end()
	select {
	case <-el.ended:
	case <-time.After(eventually.Timeout):
		t.Fatal("the peer's piece server never read the end of the agent's side")
	}
	close(gate)
	select {
	case err := <-sent:
		if err != nil {
			t.Fatalf("the peer's send of piece 0 ended with %v; want it written to the end", err)
		}
	case <-time.After(eventually.Timeout):
		t.Fatal("the peer's send of piece 0 never ended")
	}
	select {
	case <-c.closed:
	case <-time.After(eventually.Timeout):
		t.Fatal("the conn did not end once the peer had")
	}
}

// doneSource is a gatedSource telling done how each piece's send ended.
type doneSource struct {
	*gatedSource
	done chan<- error
}

func (d doneSource) OpenPiece(ctx context.Context, dg digest.Digest, i int) (*piecewire.Piece, error) {
	p, err := d.gatedSource.OpenPiece(ctx, dg, i)
	if err == nil {
		p.Done = func(_ int64, err error) { d.done <- err }
	}
	return p, err
}

// endListener's connections close ended when a read meets the end of the
// other side (io.EOF).
type endListener struct {
	net.Listener
	ended chan struct{}
	once  sync.Once
}

func (l *endListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &endConn{Conn: nc, l: l}, nil
}

type endConn struct {
	net.Conn
	l *endListener
}

func (c *endConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if errors.Is(err, io.EOF) {
		c.l.once.Do(func() { close(c.l.ended) })
	}
	return n, err
}

// createBlob creates a blob of n pieces of pieceLength random bytes (from
// seed) in s's store, none of them held, and returns its bytes and
// metainfo.
func createBlob(t *testing.T, s *Swarm, n int, pieceLength int64, seed byte) ([]byte, *metainfo.Metainfo) {
	t.Helper()
	data := make([]byte, int64(n)*pieceLength)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(data)
	m, err := metainfo.Compute(bytes.NewReader(data), digest.FromBytes(data), int64(len(data)), pieceLength)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.Create(m); err != nil {
		t.Fatal(err)
	}
	return data, m
}

// dialPieceServer opens s's piece connection for m to the piece server at
// addr, with a capability from key.
func dialPieceServer(t *testing.T, s *Swarm, key *auth.Key, m *metainfo.Metainfo, addr string) *piecewire.Conn {
	t.Helper()
	tok, err := key.IssueCapability(m.Digest, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := piecewire.Dial(t.Context(), addr, nil, m, tok, piecewire.ClientConfig{Buffer: s.store.PieceBuffer})
	if err != nil {
		t.Fatal(err)
	}
	return pw
}
