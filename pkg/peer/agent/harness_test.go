package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/pkg/tracker"
	"github.com/shoal-dev/shoal/proto/peerpb"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// testLogger logs to the test output only when SHOAL_TEST_LOG is set: a
// swarm of agents is noisy.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SHOAL_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// testOrigin is a real origin on the in-memory driver.
type testOrigin struct {
	t   testing.TB
	srv *httptest.Server
	URL string
	// blobGETs counts blob GETs the origin's registry API served: with P2P
	// working the agents must not need any.
	blobGETs atomic.Int64
}

// testKey is the origin cluster's signing key in these tests: the test
// origin hands out capabilities signed by it and test seeders sign their
// metainfo with it, as the nodes of one origin cluster share a key.
func testKey() *auth.Key {
	return auth.NewKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize)))
}

func startOrigin(t testing.TB) *testOrigin {
	t.Helper()
	s, err := origin.New(inmemory.New(), origin.DefaultConfig(), testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetSigningKey(testKey(), 0)
	o := &testOrigin{t: t}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha") {
			o.blobGETs.Add(1)
		}
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(o.srv.Close)
	o.URL = o.srv.URL
	return o
}

func (o *testOrigin) do(method, path string, body []byte, hdr ...string) (*http.Response, []byte) {
	o.t.Helper()
	req, err := http.NewRequest(method, o.URL+path, bytes.NewReader(body))
	if err != nil {
		o.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (o *testOrigin) pushBlob(name string, content []byte) digest.Digest {
	o.t.Helper()
	d := digest.FromBytes(content)
	resp, b := o.do("POST", "/v2/"+name+"/blobs/uploads/?digest="+d.String(), content)
	if resp.StatusCode != http.StatusCreated {
		o.t.Fatalf("pushing blob: %d %s", resp.StatusCode, b)
	}
	return d
}

func (o *testOrigin) pushManifest(name, ref, mediaType string, body []byte) digest.Digest {
	o.t.Helper()
	resp, b := o.do("PUT", "/v2/"+name+"/manifests/"+ref, body, "Content-Type", mediaType)
	if resp.StatusCode != http.StatusCreated {
		o.t.Fatalf("pushing manifest: %d %s", resp.StatusCode, b)
	}
	return digest.FromBytes(body)
}

// testSeeder serves shoal.peer.v1.Peer from blobs in memory, like an
// origin seeder: GetMetainfo (signed with testKey), and Exchange as a
// complete peer, both only against a capability for the blob signed with
// testKey. corrupt flips a byte of every piece it sends (a malicious
// agent).
type testSeeder struct {
	peerpb.UnimplementedPeerServer
	t       testing.TB
	id      string
	corrupt bool
	// signer signs the metainfo added from then on (default testKey; nil
	// after unsigned(): a seeder that does not sign).
	signer *auth.Key
	// denied counts calls refused for want of a valid capability.
	denied atomic.Int64
	// mute: handshakes, then never answers a request.
	mute bool
	// hangMetainfo: GetMetainfo never answers; hungUp counts the calls
	// whose caller gave up.
	hangMetainfo bool
	hungUp       atomic.Int64
	// refuseMetainfo: the next that many GetMetainfo calls are refused
	// with RESOURCE_EXHAUSTED and a RetryInfo of 200ms, as an origin's
	// cold-metainfo rate limit refuses; metainfoCalls counts every call.
	refuseMetainfo, metainfoCalls atomic.Int64
	// limit, if set, paces the piece data of all streams together, like
	// an origin whose link is the bottleneck. Set with setRate.
	limit *rate.Limiter
	// chunk is the PieceChunk size sent (default 256 KiB).
	chunk    int
	pieceLen int64
	addr     string
	srv      *grpc.Server
	// sent counts piece bytes sent: the origin's egress; aborted the
	// pieces cut short by a Cancel, cancelled the requests withdrawn before
	// they were served.
	sent, aborted, cancelled, requests atomic.Int64

	mu    sync.Mutex
	blobs map[digest.Digest][]byte
	metas map[digest.Digest]*metainfo.Metainfo
}

func startSeeder(t testing.TB, id string, pieceLen int64, corrupt bool, opts ...grpc.ServerOption) *testSeeder {
	t.Helper()
	s := &testSeeder{t: t, id: id, corrupt: corrupt, pieceLen: pieceLen, signer: testKey(),
		blobs: map[digest.Digest][]byte{}, metas: map[digest.Digest]*metainfo.Metainfo{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.srv = grpc.NewServer(opts...)
	peerpb.RegisterPeerServer(s.srv, s)
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(s.srv.Stop)
	return s
}

// setRate limits the seeder's total piece egress to bytesPerSec.
func (s *testSeeder) setRate(bytesPerSec int) {
	s.limit = rate.NewLimiter(rate.Limit(bytesPerSec), 32<<10)
}

func (s *testSeeder) add(content []byte) *metainfo.Metainfo {
	s.t.Helper()
	d := digest.FromBytes(content)
	m, err := metainfo.Compute(bytes.NewReader(content), d, int64(len(content)), s.pieceLen)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.addAs(d, content, m)
}

// addAs serves content under d with metainfo m, signed with s.signer: a
// seeder that lies, when m does not describe d.
func (s *testSeeder) addAs(d digest.Digest, content []byte, m *metainfo.Metainfo) *metainfo.Metainfo {
	s.t.Helper()
	if s.signer != nil {
		if err := s.signer.SignMetainfo(m); err != nil {
			s.t.Fatal(err)
		}
	}
	s.mu.Lock()
	s.blobs[d], s.metas[d] = content, m
	s.mu.Unlock()
	return m
}

// announce registers the seeder with the tracker for d, as an origin or
// (origin false) as a complete agent.
func (s *testSeeder) announce(trackerAddr string, d digest.Digest, isOrigin bool) {
	s.t.Helper()
	cc, err := grpc.NewClient(trackerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatal(err)
	}
	defer cc.Close()
	_, err = trackerpb.NewTrackerClient(cc).Announce(context.Background(), &trackerpb.AnnounceRequest{
		Digest: d.String(), PeerId: s.id, Addr: s.addr, Complete: true, IsOrigin: isOrigin,
		Event: trackerpb.Event_EVENT_COMPLETED,
	})
	if err != nil {
		s.t.Fatalf("seeder announcing: %v", err)
	}
}

// checkCapability refuses a call without a valid capability for d, as an
// origin seeder does.
func (s *testSeeder) checkCapability(ctx context.Context, d digest.Digest) error {
	if err := auth.NewVerifier(testKey().Public()).VerifyCapability(auth.CallCapability(ctx), d); err != nil {
		s.denied.Add(1)
		return auth.CapabilityDenied("test seeder", err)
	}
	return nil
}

func (s *testSeeder) GetMetainfo(ctx context.Context, req *peerpb.GetMetainfoRequest) (*peerpb.Metainfo, error) {
	if err := s.checkCapability(ctx, digest.Digest(req.GetDigest())); err != nil {
		return nil, err
	}
	s.metainfoCalls.Add(1)
	if s.refuseMetainfo.Add(-1) >= 0 {
		st, err := status.New(codes.ResourceExhausted, "test seeder: too many cold metainfo requests").
			WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(200 * time.Millisecond)})
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	if s.hangMetainfo {
		<-ctx.Done()
		s.hungUp.Add(1)
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.metas[digest.Digest(req.GetDigest())]
	if !ok {
		return nil, status.Error(codes.NotFound, "unknown blob")
	}
	return m.Proto(), nil
}

func (s *testSeeder) Exchange(st grpc.BidiStreamingServer[peerpb.Message, peerpb.Message]) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	d := digest.Digest(first.GetHandshake().GetDigest())
	if err := s.checkCapability(st.Context(), d); err != nil {
		return err
	}
	s.mu.Lock()
	content, ok := s.blobs[d]
	m := s.metas[d]
	s.mu.Unlock()
	if !ok {
		return status.Error(codes.NotFound, "unknown blob")
	}
	if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{
		Digest: d.String(), PeerId: s.id, Complete: true}}}); err != nil {
		return err
	}
	var streamSent int64
	defer func() {
		if os.Getenv("SHOAL_TEST_SEEDER_LOG") != "" {
			s.t.Logf("seeder stream to %s ended: %d bytes", first.GetHandshake().GetPeerId(), streamSent)
		}
	}()
	// Requests are queued by a reader goroutine and served in order by this
	// one; a Cancel drops a queued request or cuts the piece being sent,
	// as a real seeder does.
	var mu sync.Mutex
	var queue []int
	current, abort := -1, false
	wake := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := st.Recv()
			if err != nil {
				return
			}
			mu.Lock()
			switch {
			case msg.GetRequest() != nil && !s.mute:
				s.requests.Add(1)
				queue = append(queue, int(msg.GetRequest().GetIndex()))
			case msg.GetCancel() != nil:
				i := int(msg.GetCancel().GetIndex())
				n := len(queue)
				queue = slices.DeleteFunc(queue, func(q int) bool { return q == i })
				s.cancelled.Add(int64(n - len(queue)))
				if current == i {
					abort = true
				}
			}
			mu.Unlock()
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	for {
		mu.Lock()
		if len(queue) == 0 {
			mu.Unlock()
			select {
			case <-wake:
				continue
			case <-done:
				return nil
			}
		}
		i := queue[0]
		queue = queue[1:]
		current, abort = i, false
		mu.Unlock()
		off := m.PieceOffset(i)
		piece := content[off : off+m.PieceSize(i)]
		chunk := 256 << 10
		if s.chunk > 0 {
			chunk = s.chunk
		}
		if s.corrupt {
			piece = append([]byte(nil), piece...)
		}
		if s.corrupt {
			piece[len(piece)/2] ^= 0xff
		}
		if s.limit != nil {
			chunk = min(chunk, 32<<10) // the limiter's burst
		}
		for o := 0; o < len(piece); o += chunk {
			mu.Lock()
			stop := abort
			mu.Unlock()
			if stop {
				s.aborted.Add(1)
				break
			}
			end := min(o+chunk, len(piece))
			if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Chunk{Chunk: &peerpb.PieceChunk{
				Index: uint32(i), Offset: int64(o), Data: piece[o:end]}}}); err != nil {
				return nil
			}
			s.sent.Add(int64(end - o))
			streamSent += int64(end - o)
			if s.limit != nil {
				if err := s.limit.WaitN(st.Context(), end-o); err != nil {
					return nil
				}
			}
		}
	}
}

// testTracker is a real tracker on loopback gRPC.
type testTracker struct {
	addr string
	srv  *grpc.Server
}

func startTracker(t testing.TB) *testTracker {
	t.Helper()
	cfg := tracker.DefaultConfig()
	cfg.AnnounceInterval = time.Second
	cfg.PeerTTL = 5 * time.Second
	ts, err := tracker.NewServer(cfg, tracker.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	trackerpb.RegisterTrackerServer(g, ts)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return &testTracker{addr: ln.Addr().String(), srv: g}
}

// testAgent is an in-process agent.
type testAgent struct {
	*Agent
	t    testing.TB
	stop context.CancelFunc
	done chan error
}

func testConfig(t testing.TB, originURL string, seeders []string, trackers []string) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.PeerListen = "127.0.0.1:0"
	cfg.Origin = originURL
	cfg.OriginSeeders = seeders
	cfg.Tracker.Trackers = trackers
	cfg.Tracker.Timeout = 3 * time.Second
	cfg.Tracker.Cooldown = 2 * time.Second
	cfg.CacheDir = t.TempDir()
	cfg.CacheQuota = 1 << 30
	cfg.ShutdownGrace = 5 * time.Second
	cfg.Swarm.DialTimeout = time.Second
	cfg.Swarm.PieceTimeout = 5 * time.Second
	cfg.Swarm.StallTimeout = 20 * time.Second
	cfg.Swarm.DownloadAnnounceInterval = 200 * time.Millisecond
	return cfg
}

func startAgent(t testing.TB, cfg Config) *testAgent {
	t.Helper()
	return startAgentLogging(t, cfg, testLogger(t))
}

// startAgentLogging is startAgent with the agent's logger.
func startAgentLogging(t testing.TB, cfg Config, log *slog.Logger) *testAgent {
	t.Helper()
	a, err := Listen(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{Agent: a, t: t, stop: cancel, done: make(chan error, 1)}
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(ta.shutdown)
	return ta
}

func (a *testAgent) shutdown() {
	a.stop()
	select {
	case err := <-a.done:
		if err != nil {
			a.t.Errorf("agent %s: %v", a.PeerID(), err)
		}
		a.done <- nil
	case <-time.After(20 * time.Second):
		a.t.Errorf("agent %s did not shut down", a.PeerID())
	}
}

func (a *testAgent) url(path string) string { return "http://" + a.MirrorAddr() + path }

// get fetches path from the agent's mirror.
func (a *testAgent) get(method, path string, hdr ...string) (*http.Response, []byte) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.url(path), nil)
	if err != nil {
		a.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

// metric sums the samples of a counter or gauge whose labels include want.
func (a *testAgent) metric(name string, want ...string) float64 {
	a.t.Helper()
	mfs, err := a.Registry().Gather()
	if err != nil {
		a.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
