package seeder

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// pieceBlobSize makes three pieces of testPieceLength, the last one short.
const pieceBlobSize = 2*testPieceLength + 12345

// dialPieces opens a piece connection to the seeder as an agent does, with
// a capability for m's blob minted with the cluster key.
func dialPieces(t *testing.T, s *testSeeder, m *metainfo.Metainfo, tc *tls.Config) *piecewire.Conn {
	t.Helper()
	tok, err := clusterKey().IssueCapability(m.Digest, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return dialPiecesWith(t, s, m, tc, tok)
}

func dialPiecesWith(t *testing.T, s *testSeeder, m *metainfo.Metainfo, tc *tls.Config, tok string) *piecewire.Conn {
	t.Helper()
	if s.PieceAddr() == "" {
		t.Fatal("the seeder serves no piece data path")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := piecewire.Dial(ctx, s.PieceAddr(), tc, m, tok, piecewire.ClientConfig{})
	if err != nil {
		t.Fatalf("dialing the seeder's piece data path: %v", err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// seedPieces puts a blob of three pieces in d and starts a seeder on it;
// it returns the seeder, the blob and its metainfo.
func seedPieces(t *testing.T, d storage.Driver, mutate func(*Config, *Options, string)) (*testSeeder, []byte, *metainfo.Metainfo) {
	t.Helper()
	blob, _ := randomBlob(t, pieceBlobSize)
	dg := putBlobPieces(t, d, blob)
	s := startSeeder(t, d, mutate)
	m, err := s.metainfo(context.Background(), dg, false)
	if err != nil {
		t.Fatal(err)
	}
	return s, blob, m
}

// expectRefused checks that pc's first request ends the connection,
// refused (an Error frame, permission denied), with no answer.
func expectRefused(t *testing.T, pc *piecewire.Conn, who string) {
	t.Helper()
	if err := pc.Request(0); err != nil {
		t.Fatal(err)
	}
	for r := range pc.Results() {
		t.Errorf("%s: got %v, want the connection refused", who, r)
	}
	if err := pc.Err(); !errors.Is(err, piecewire.ErrDenied) {
		t.Errorf("%s: the connection ended with %v, want it refused (piecewire.ErrDenied)", who, err)
	}
}

// answer requests piece i and returns the answer.
func answer(t *testing.T, pc *piecewire.Conn, i int) piecewire.Result {
	t.Helper()
	if err := pc.Request(i); err != nil {
		t.Fatalf("requesting piece %d: %v", i, err)
	}
	select {
	case r, ok := <-pc.Results():
		if !ok {
			t.Fatalf("piece %d: the connection ended: %v", i, pc.Err())
		}
		if r.Index != i {
			t.Fatalf("asked for piece %d, got an answer for %d", i, r.Index)
		}
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("piece %d: no answer", i)
	}
	return piecewire.Result{}
}

// An agent that learns the piece port from its Exchange's response header
// fetches every piece from the seeder's disk cache over the piece data
// path: sent with sendfile, counted as egress and as served from the cache.
func TestPiecesOverTheDataPathWithSendfile(t *testing.T) {
	d := newCountingDriver()
	s, blob, m := seedPieces(t, d, nil)
	dg := m.Digest

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := s.client().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	handshake(t, stream, dg)
	hdr, err := stream.Header()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(s.PieceAddr())
	if got := hdr.Get(peerwire.PieceHeader); len(got) != 1 || got[0] != port {
		t.Fatalf("Exchange response header %s = %q, want the piece port %q", peerwire.PieceHeader, got, port)
	}

	pc := dialPieces(t, s, m, nil)
	var got []byte
	for i := range m.NumPieces() {
		r := answer(t, pc, i)
		if r.Data == nil {
			t.Fatalf("piece %d: %v, want its bytes", i, r)
		}
		got = append(got, r.Data...)
	}
	if !bytes.Equal(got, blob) {
		t.Fatal("the pieces put together are not the blob")
	}
	size := float64(len(blob))
	eventually.True(t, "every piece byte counted as sent with sendfile", func() bool {
		return counter(t, s.m.pieceBytes.WithLabelValues("sendfile")) == size
	})
	if n := counter(t, s.m.pieceBytes.WithLabelValues("copy")); n != 0 {
		t.Errorf("%v bytes copied on a plaintext connection from the cache, want 0 (all sendfile)", n)
	}
	if n := counter(t, s.m.egressBytes); n != size {
		t.Errorf("egress_bytes_total = %v, want the blob's %v", n, size)
	}
	if n := counter(t, s.m.servedBytes.WithLabelValues("cache")); n != size {
		t.Errorf("served_bytes_total{source=cache} = %v, want %v", n, size)
	}
	if n := counter(t, s.m.piecesServed.WithLabelValues("cache")); n != float64(m.NumPieces()) {
		t.Errorf("pieces_served_total{source=cache} = %v, want %d", n, m.NumPieces())
	}
	if n := d.readsOf(dg); n != 1 {
		t.Errorf("blob read from storage %d times, want once (into the cache)", n)
	}
	if n := counter(t, s.m.uploads); n != 0 {
		t.Errorf("%v upload slots still held after every piece went out", n)
	}
}

// A piece given to one agent is refused to another within its window
// (AT_PEERS with the time left), and given again to the agent that got it.
func TestPiecesOverTheDataPathSuperseed(t *testing.T) {
	s, _, m := seedPieces(t, inmemory.New(), nil)

	first, second := dialPieces(t, s, m, nil), dialPieces(t, s, m, nil)
	if r := answer(t, first, 0); r.Data == nil {
		t.Fatalf("piece 0 to the first agent: %v, want its bytes", r)
	}
	r := answer(t, second, 0)
	if r.Reject != piecewire.ReasonAtPeers || r.RetryAfter <= 0 {
		t.Fatalf("piece 0 to a second agent within its window: %v, want a reject 'at peers' with a retry time", r)
	}
	if r := answer(t, second, 1); r.Data == nil {
		t.Errorf("piece 1 to the second agent: %v, want its bytes (only the piece given away waits)", r)
	}
	if r := answer(t, first, 2); r.Data == nil {
		t.Errorf("piece 2 to the first agent: %v, want its bytes", r)
	}
	if r := answer(t, first, 0); r.Data == nil {
		t.Errorf("piece 0 again to the agent that got it: %v, want its bytes", r)
	}
	if n := counter(t, s.m.rejects.WithLabelValues("at_peers")); n != 1 {
		t.Errorf("rejects_total{reason=at_peers} = %v, want 1", n)
	}
}

// openAs opens an Exchange stream to the seeder for m's blob as agent id.
func openAs(t *testing.T, s *testSeeder, m *metainfo.Metainfo, id string) peerpb.Peer_ExchangeClient {
	t.Helper()
	st, err := s.client().Exchange(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	handshakeAs(t, st, m.Digest, id)
	return st
}

// Without mTLS a piece connection names no agent: it counts as the agent
// whose stream for the blob is open from its host, so an agent given a
// piece over its piece connection is given it again on its stream (one
// recipient, not two). A host with two agents' streams cannot say which a
// piece connection is: it counts as neither.
func TestPieceConnectionCountsAsItsAgentsStream(t *testing.T) {
	s, _, m := seedPieces(t, inmemory.New(), func(c *Config, _ *Options, _ string) {
		c.SuperseedWindow, c.SuperseedMaxWindow = time.Minute, time.Minute
	})

	a := openAs(t, s, m, "agent-a")
	if r := answer(t, dialPieces(t, s, m, nil), 0); r.Data == nil {
		t.Fatalf("piece 0 to agent a's piece connection: %v, want its bytes", r)
	}
	request(t, a, 0)
	if r := receiveAnswer(t, a, m, 0); r != nil {
		t.Fatalf("agent a asking on its stream for the piece its piece connection got: %v, want the piece (one agent, one recipient)", r)
	}

	b := openAs(t, s, m, "agent-b")
	request(t, b, 0)
	if r := receiveAnswer(t, b, m, 0); r.GetReason() != peerpb.Reject_REASON_AT_PEERS {
		t.Fatalf("agent b asking for piece 0, given to a: %v, want REASON_AT_PEERS", r)
	}
	if r := answer(t, dialPieces(t, s, m, nil), 0); r.Reject != piecewire.ReasonAtPeers {
		t.Fatalf("piece 0 to a piece connection from a host with a's and b's streams: %v, want 'at peers' (taken for neither agent)", r)
	}
}

// Through the seeder: agent a got piece 0 on its stream and piece 1 on its
// piece connection, which then breaks (reset). Only piece 1 is freed for
// the next agent: piece 0 is with a, whose stream is fine, and sending it
// again would be origin egress the swarm does not need.
func TestBrokenPieceConnectionFreesOnlyItsOwnPieces(t *testing.T) {
	s, _, m := seedPieces(t, inmemory.New(), func(c *Config, _ *Options, _ string) {
		c.SuperseedWindow, c.SuperseedMaxWindow = time.Minute, time.Minute
	})
	a := openAs(t, s, m, "agent-a")
	request(t, a, 0)
	if r := receiveAnswer(t, a, m, 0); r != nil {
		t.Fatalf("piece 0 to agent a's stream: %v, want the piece", r)
	}
	tok, err := clusterKey().IssueCapability(m.Digest, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", s.PieceAddr())
	if err != nil {
		t.Fatal(err)
	}
	pc, err := piecewire.NewConn(nc, m, tok, piecewire.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	if r := answer(t, pc, 1); r.Data == nil {
		t.Fatalf("piece 1 to agent a's piece connection: %v, want its bytes", r)
	}
	// Broken, not closed: a reset, as when the agent's host goes away.
	_ = nc.(*net.TCPConn).SetLinger(0)
	_ = pc.Close()

	b := openAs(t, s, m, "agent-b")
	var last *peerpb.Reject
	if err := eventually.Wait(30*time.Second, func() bool {
		request(t, b, 1)
		last = receiveAnswer(t, b, m, 1)
		return last == nil
	}); err != nil {
		t.Fatalf("agent b asking for piece 1 after a's piece connection broke: %v; last answer %v, want the piece", err, last)
	}
	request(t, b, 0)
	if r := receiveAnswer(t, b, m, 0); r.GetReason() != peerpb.Reject_REASON_AT_PEERS {
		t.Fatalf("agent b asking for piece 0, given on a's stream, after a's piece connection broke: %v, want REASON_AT_PEERS (a still has it)", r)
	}
}

// A request beyond the node's upload slots is answered busy; the
// connection stays usable.
func TestPiecesOverTheDataPathAdmission(t *testing.T) {
	s, _, m := seedPieces(t, inmemory.New(), func(c *Config, _ *Options, _ string) { c.MaxUploads = 1 })
	pc := dialPieces(t, s, m, nil)

	s.uploads <- struct{}{} // a piece being sent elsewhere holds the one slot
	if r := answer(t, pc, 0); r.Reject != piecewire.ReasonBusy {
		t.Fatalf("piece 0 with every upload slot taken: %v, want a reject 'busy'", r)
	}
	<-s.uploads
	if r := answer(t, pc, 1); r.Data == nil {
		t.Fatalf("piece 1 once the slot is free: %v, want its bytes", r)
	}
	if r := answer(t, pc, 0); r.Data == nil {
		t.Fatalf("piece 0 once the slot is free: %v, want its bytes (the busy answer gave no piece away)", r)
	}
	if n := counter(t, s.m.rejects.WithLabelValues("busy")); n != 1 {
		t.Errorf("rejects_total{reason=busy} = %v, want 1", n)
	}
}

// A connection without a valid capability for the blob is refused before
// the blob is looked at: no storage read, no cache fill.
func TestPiecesOverTheDataPathNeedACapability(t *testing.T) {
	d := newCountingDriver()
	blob, _ := randomBlob(t, pieceBlobSize)
	dg := putBlob(t, d, blob)
	s := startSeeder(t, d, nil)
	m := &metainfo.Metainfo{Digest: dg, Size: int64(len(blob)), PieceLength: testPieceLength,
		PieceHashes: make([][metainfo.HashSize]byte, 3)}

	other, err := clusterKey().IssueCapability(digest.FromString("another blob"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"none": "", "another blob's": other} {
		expectRefused(t, dialPiecesWith(t, s, m, nil, tok), name+" capability")
	}
	if n := counter(t, s.m.capabilityDenied.WithLabelValues("pieces")); n != 2 {
		t.Errorf("capability_denied_total{rpc=pieces} = %v, want 2", n)
	}
	if n := d.readsOf(dg); n != 0 {
		t.Errorf("refused connections made the seeder read the blob %d times, want 0", n)
	}
	if s.cache.has(dg) {
		t.Error("refused connections started a cache fill")
	}
}

// With mTLS the piece data path is TLS 1.3 with the node's certificate: an
// agent's certificate gets pieces (written through TLS, not sendfile), a
// tracker's is refused as on gRPC.
func TestPiecesOverTheDataPathMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	caFile := filepath.Join(ca.dir, "ca.pem")
	serverCert, serverKey := ca.issue(t, auth.RoleOrigin, "origin-1")
	s, _, m := seedPieces(t, inmemory.New(), func(c *Config, _ *Options, _ string) {
		c.TLS = TLSConfig{Cert: serverCert, Key: serverKey, CA: caFile}
	})
	clientTLS := func(role auth.Role, id string) *tls.Config {
		cert, key := ca.issue(t, role, id)
		tc, err := TLSConfig{Cert: cert, Key: key, CA: caFile}.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		tc.ServerName = "127.0.0.1"
		return tc
	}

	agent := dialPieces(t, s, m, clientTLS(auth.RoleAgent, "agent-1"))
	if r := answer(t, agent, 0); r.Data == nil {
		t.Fatalf("piece 0 to an agent's certificate over TLS: %v, want its bytes", r)
	}
	eventually.True(t, "the piece counted as written through TLS", func() bool {
		return counter(t, s.m.pieceBytes.WithLabelValues("copy")) == float64(m.PieceSize(0))
	})
	if n := counter(t, s.m.pieceBytes.WithLabelValues("sendfile")); n != 0 {
		t.Errorf("%v bytes sent with sendfile on a TLS connection", n)
	}

	expectRefused(t, dialPieces(t, s, m, clientTLS(auth.RoleTracker, "tracker-1")), "a tracker's certificate")

	plain, err := net.Dial("tcp", s.PieceAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	pc, err := piecewire.NewConn(plain, m, "", piecewire.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_ = pc.Request(0)
	for r := range pc.Results() {
		t.Errorf("a plaintext client of a TLS piece data path got %v", r)
	}
}

// pieceListen "off" keeps the pieces on the Exchange streams: no listener,
// no header naming one.
func TestPiecesOverTheDataPathOff(t *testing.T) {
	d := inmemory.New()
	dg := putBlob(t, d, []byte("on the stream"))
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) { c.PieceListen = PieceListenOff })
	if a := s.PieceAddr(); a != "" {
		t.Fatalf("piece data path listening on %s with pieceListen off", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := s.client().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	handshake(t, stream, dg)
	hdr, err := stream.Header()
	if err != nil {
		t.Fatal(err)
	}
	if v := hdr.Get(peerwire.PieceHeader); len(v) != 0 {
		t.Errorf("Exchange header %s = %q with the piece data path off, want none", peerwire.PieceHeader, v)
	}
	m := getMetainfo(t, s.client(), dg)
	if got := fetchAll(t, s.client(), m); string(got) != "on the stream" {
		t.Errorf("pieces on the stream = %q", got)
	}
}

// A node whose link is slower than what it accepted answers BUSY on the
// piece data path, too, for a piece it would not send within
// maxUploadWait: the rate is measured from the pieces sent whole, one
// of which takes longer than a byte counter's idle gap.
func TestPiecesOverTheDataPathRefuseWhatTheLinkWouldNotSendInTime(t *testing.T) {
	s, _, m := seedPieces(t, inmemory.New(), func(c *Config, _ *Options, _ string) {
		c.EgressBytesPerSecond = 1 << 20
		c.MaxUploadWait = 2 * time.Second
	})
	a, b := dialPieces(t, s, m, nil), dialPieces(t, s, m, nil)
	// About 3 s of sending (the egress bucket starts with 1 MiB) measure
	// the rate.
	if r := answer(t, a, 0); r.Data == nil {
		t.Fatalf("piece 0: %v, want its bytes", r)
	}
	if err := a.Request(1); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "piece 1 on its way to a", func() bool { _, ok := a.Arrived(1); return ok })
	if r := answer(t, b, 2); r.Reject != piecewire.ReasonBusy {
		t.Fatalf("piece 2 asked while 4 MiB are being sent at 1 MiB/s, with maxUploadWait 2s: %v, want a reject 'busy'", r)
	}
	if r := <-a.Results(); r.Index != 1 || r.Data == nil {
		t.Fatalf("piece 1: %v, want its bytes", r)
	}
	// The client can have piece 1's last byte before the node's send
	// returns and leaves its backlog.
	eventually.True(t, "the node idle", func() bool { return s.up.Backlog() == 0 })
	if r := answer(t, b, 2); r.Data == nil {
		t.Fatalf("piece 2 once the node is idle: %v, want its bytes", r)
	}
}

// The link is measured while a piece is being sent, from its write
// rounds: a node sending one piece slowly turns away the next it would not
// send within maxUploadWait before the first ends (pieces sent together on
// a slow link end together, long after the node had to know).
func TestPiecesOverTheDataPathMeasureTheLinkBeforeAPieceEnds(t *testing.T) {
	s, _, m := seedPieces(t, inmemory.New(), func(c *Config, _ *Options, _ string) {
		c.EgressBytesPerSecond = 256 << 10 // piece 0 takes 12 s after the first 1 MiB
		c.MaxUploadWait = 2 * time.Second
	})
	a, b := dialPieces(t, s, m, nil), dialPieces(t, s, m, nil)
	if err := a.Request(0); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the link's rate measured", func() bool { return s.up.Rate() > 0 })
	if s.up.Backlog() == 0 {
		t.Fatal("piece 0 was sent before the rate was measured; the test needs it still going")
	}
	if r := answer(t, b, 1); r.Reject != piecewire.ReasonBusy {
		t.Fatalf("piece 1 asked while piece 0 goes out at 256 KiB/s, with maxUploadWait 2s: %v, want a reject 'busy'", r)
	}
}

// Until a node has measured its link, it sends four pieces at once and
// answers BUSY beyond them, however long maxUploadWait: a swarm starting
// together asks for a piece per agent at once, and a slow link taking them
// all sent each at a fraction of its rate, none reaching the swarm for
// most of a blob's send time.
func TestPiecesOverTheDataPathGoFourAtATimeUntilTheLinkIsMeasured(t *testing.T) {
	d := inmemory.New()
	blob, _ := randomBlob(t, 4*testPieceLength+12345) // five pieces
	dg := putBlobPieces(t, d, blob)
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) {
		// The bucket's first 1 MiB goes at once; the next write round
		// waits 16 s for its tokens, and the first sample of the rate
		// with it.
		c.EgressBytesPerSecond = 64 << 10
		c.MaxUploadWait = time.Hour
	})
	m, err := s.metainfo(context.Background(), dg, false)
	if err != nil {
		t.Fatal(err)
	}
	if m.NumPieces() != 5 {
		t.Fatalf("%d pieces, the test needs 5", m.NumPieces())
	}
	for i := range 4 {
		pc := dialPieces(t, s, m, nil)
		if err := pc.Request(i); err != nil {
			t.Fatal(err)
		}
		eventually.True(t, fmt.Sprintf("piece %d on its way", i), func() bool { _, ok := pc.Arrived(i); return ok })
	}
	if s.up.Rate() != 0 {
		t.Fatal("the link was measured already; the test needs it unmeasured")
	}
	if r := answer(t, dialPieces(t, s, m, nil), 4); r.Reject != piecewire.ReasonBusy {
		t.Fatalf("piece 4 asked while pieces 0 to 3 go out on a link not measured yet: %v, want a reject 'busy'", r)
	}
}
