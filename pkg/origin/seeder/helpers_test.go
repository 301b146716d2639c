package seeder

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/cluster"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// countingDriver counts blob reads (Reader and GetContent) per path.
type countingDriver struct {
	storage.Driver
	mu    sync.Mutex
	reads map[string]int
}

func newCountingDriver() *countingDriver {
	return &countingDriver{Driver: inmemory.New(), reads: map[string]int{}}
}

func (c *countingDriver) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	c.mu.Lock()
	c.reads[path]++
	c.mu.Unlock()
	return c.Driver.Reader(ctx, path, offset)
}

func (c *countingDriver) GetContent(ctx context.Context, path string) ([]byte, error) {
	c.mu.Lock()
	c.reads[path]++
	c.mu.Unlock()
	return c.Driver.GetContent(ctx, path)
}

func (c *countingDriver) readsOf(d digest.Digest) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[blobDataPath(d)]
}

func randomBlob(t testing.TB, size int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, digest.FromBytes(b)
}

// putBlob writes a blob straight into the registry:2 layout.
func putBlob(t testing.TB, d storage.Driver, b []byte) digest.Digest {
	t.Helper()
	dg := digest.FromBytes(b)
	if err := d.PutContent(context.Background(), blobDataPath(dg), b); err != nil {
		t.Fatal(err)
	}
	return dg
}

// testPieceLength is the piece length the tests of rates, timings and
// upload slots are written for (4 MiB, the policy's until 2026-12-05):
// putBlobPieces stores a blob's metainfo with it, which the seeder serves
// as is instead of computing its own (metainfo.PieceLengthFor's 1 MiB).
const testPieceLength = 4 << 20

// putBlobPieces is putBlob with the blob's metainfo stored, in pieces of
// testPieceLength.
func putBlobPieces(t testing.TB, d storage.Driver, b []byte) digest.Digest {
	t.Helper()
	dg := putBlob(t, d, b)
	m, err := metainfo.Compute(bytes.NewReader(b), dg, int64(len(b)), testPieceLength)
	if err != nil {
		t.Fatal(err)
	}
	if err := metainfo.Store(context.Background(), d, m); err != nil {
		t.Fatal(err)
	}
	return dg
}

// pushBlob uploads a blob through the origin's registry API.
func pushBlob(t testing.TB, d storage.Driver, b []byte) digest.Digest {
	t.Helper()
	reg, err := origin.New(d, origin.DefaultConfig(), testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(reg)
	defer ts.Close()
	dg := digest.FromBytes(b)
	resp, err := http.Post(ts.URL+"/v2/team/app/blobs/uploads/?digest="+dg.String(), "application/octet-stream", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("pushing blob: status %s, want 201", resp.Status)
	}
	return dg
}

type testSeeder struct {
	*Server
	addr string
	reg  *prometheus.Registry
	conn *grpc.ClientConn
	raw  *grpc.ClientConn
}

// client calls the seeder as an authorized agent does: every call carries
// a capability for its blob, minted with the cluster key.
func (ts *testSeeder) client() peerpb.PeerClient { return peerpb.NewPeerClient(ts.conn) }

// rawClient calls the seeder with only the metadata the test adds.
func (ts *testSeeder) rawClient() peerpb.PeerClient { return peerpb.NewPeerClient(ts.raw) }

// clusterKey is the origin cluster's signing key in these tests: every
// node of a test cluster has the same, as with a key shared in storage.
func clusterKey() *auth.Key {
	return auth.NewKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))
}

// withCapability adds a capability for d, minted with k, to ctx.
func withCapability(t testing.TB, ctx context.Context, k *auth.Key, d digest.Digest) context.Context {
	t.Helper()
	tok, err := k.IssueCapability(d, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return auth.WithCapability(ctx, tok)
}

// capabilityUnary adds a capability for the requested blob to GetMetainfo.
func capabilityUnary(k *auth.Key) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*peerpb.GetMetainfoRequest); ok {
			if tok, err := k.IssueCapability(digest.Digest(r.GetDigest()), time.Hour); err == nil {
				ctx = auth.WithCapability(ctx, tok)
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// capabilityStreams opens each Exchange when its first message is sent,
// with a capability for the blob its handshake names: the blob is known
// only then, and metadata goes with the stream's opening.
func capabilityStreams(k *auth.Key) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return &lazyStream{ctx: ctx, open: func(first any) (grpc.ClientStream, error) {
			sctx := ctx
			if m, ok := first.(*peerpb.Message); ok && m.GetHandshake() != nil {
				if tok, err := k.IssueCapability(digest.Digest(m.GetHandshake().GetDigest()), time.Hour); err == nil {
					sctx = auth.WithCapability(ctx, tok)
				}
			}
			return streamer(sctx, desc, cc, method, opts...)
		}, opened: make(chan struct{})}, nil
	}
}

// lazyStream is a client stream opened by its first SendMsg (or CloseSend).
type lazyStream struct {
	ctx    context.Context
	open   func(first any) (grpc.ClientStream, error)
	once   sync.Once
	opened chan struct{}
	cs     grpc.ClientStream
	err    error
}

func (l *lazyStream) start(first any) error {
	l.once.Do(func() {
		l.cs, l.err = l.open(first)
		close(l.opened)
	})
	return l.err
}

func (l *lazyStream) wait() error {
	select {
	case <-l.opened:
		return l.err
	case <-l.ctx.Done():
		return l.ctx.Err()
	}
}

func (l *lazyStream) SendMsg(m any) error {
	if err := l.start(m); err != nil {
		return err
	}
	return l.cs.SendMsg(m)
}

func (l *lazyStream) RecvMsg(m any) error {
	if err := l.wait(); err != nil {
		return err
	}
	return l.cs.RecvMsg(m)
}

func (l *lazyStream) CloseSend() error {
	if err := l.start(nil); err != nil {
		return err
	}
	return l.cs.CloseSend()
}

func (l *lazyStream) Header() (metadata.MD, error) {
	if err := l.wait(); err != nil {
		return nil, err
	}
	return l.cs.Header()
}

func (l *lazyStream) Trailer() metadata.MD {
	select {
	case <-l.opened:
		if l.cs != nil {
			return l.cs.Trailer()
		}
	default:
	}
	return nil
}

func (l *lazyStream) Context() context.Context { return l.ctx }

// startSeeder serves a seeder over gRPC on 127.0.0.1. mutate may change the
// config and options; the listener is bound before, so opts.Advertise and
// membership can name it.
func startSeeder(t testing.TB, d storage.Driver, mutate func(*Config, *Options, string)) *testSeeder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = ln.Addr().String()
	cfg.CacheDir = t.TempDir()
	reg := prometheus.NewRegistry()
	opts := Options{Log: testLogger(t), Registerer: reg, Key: clusterKey()}
	if mutate != nil {
		mutate(&cfg, &opts, ln.Addr().String())
	}
	s, err := New(cfg, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	srvOpt, err := ServerOption(cfg.TLS)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(srvOpt)
	peerpb.RegisterPeerServer(gs, s)
	go func() { _ = gs.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(capabilityUnary(opts.Key)), grpc.WithStreamInterceptor(capabilityStreams(opts.Key)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		raw.Close()
		conn.Close()
		gs.Stop()
		if err := s.Close(); err != nil {
			t.Errorf("closing seeder: %v", err)
		}
	})
	return &testSeeder{Server: s, addr: ln.Addr().String(), reg: reg, conn: conn, raw: raw}
}

func getMetainfo(t testing.TB, c peerpb.PeerClient, d digest.Digest) *metainfo.Metainfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := c.GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: d.String()})
	if err != nil {
		t.Fatalf("GetMetainfo(%s): %v", d, err)
	}
	m, err := metainfo.FromProto(p)
	if err != nil {
		t.Fatalf("GetMetainfo(%s) answered invalid metainfo: %v", d, err)
	}
	return m
}

// fetchAll downloads every piece over one Exchange, pipelining all the
// requests, verifies each piece and returns the blob.
func fetchAll(t testing.TB, c peerpb.PeerClient, m *metainfo.Metainfo) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := c.Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hs := handshake(t, stream, m.Digest)
	if !hs.GetComplete() || hs.GetDigest() != m.Digest.String() {
		t.Fatalf("seeder handshake = %v, want complete for %s", hs, m.Digest)
	}
	for i := range m.NumPieces() {
		if err := stream.Send(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: uint32(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	pieces := make([][]byte, m.NumPieces())
	left := m.NumPieces()
	for left > 0 {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("receiving pieces (%d left): %v", left, err)
		}
		ch := msg.GetChunk()
		if ch == nil {
			t.Fatalf("got %v while waiting for pieces", msg)
		}
		if len(ch.Data) > chunkSize {
			t.Fatalf("chunk of %d bytes, more than %d", len(ch.Data), chunkSize)
		}
		i := int(ch.Index)
		if ch.Offset != int64(len(pieces[i])) {
			t.Fatalf("piece %d: chunk at offset %d after %d bytes", i, ch.Offset, len(pieces[i]))
		}
		pieces[i] = append(pieces[i], ch.Data...)
		if int64(len(pieces[i])) == m.PieceSize(i) {
			if err := m.Verify(i, pieces[i]); err != nil {
				t.Fatalf("piece %d: %v", i, err)
			}
			left--
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend the stream should end, got %v", err)
	}
	return bytes.Join(pieces, nil)
}

func handshake(t testing.TB, stream peerpb.Peer_ExchangeClient, d digest.Digest) *peerpb.Handshake {
	t.Helper()
	return handshakeAs(t, stream, d, "test-agent")
}

func handshakeAs(t testing.TB, stream peerpb.Peer_ExchangeClient, d digest.Digest, peerID string) *peerpb.Handshake {
	t.Helper()
	if err := stream.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{
		Digest: d.String(), PeerId: peerID, Bitfield: nil,
	}}}); err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	hs := msg.GetHandshake()
	if hs == nil {
		t.Fatalf("first message from seeder is %v, want a Handshake", msg)
	}
	return hs
}

func counter(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// staticMembers is a fixed cluster view.
type staticMembers struct {
	self    cluster.Member
	members []cluster.Member
}

func (s staticMembers) Self() cluster.Member { return s.self }
func (s staticMembers) Owners(d string, r int) []cluster.Member {
	return cluster.Owners(d, s.members, r)
}

// digestOwnedBy returns a blob whose first owner among members is name.
func blobOwnedBy(t testing.TB, members []cluster.Member, name string, size int) ([]byte, digest.Digest) {
	t.Helper()
	for range 100 {
		b, d := randomBlob(t, size)
		if cluster.Owners(d.String(), members, 1)[0].Name == name {
			return b, d
		}
	}
	t.Fatalf("no blob owned by %s in 100 tries", name)
	return nil, ""
}
