package tracker

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/fakeclock"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

type testTracker struct {
	addr  string
	srv   *Server
	reg   *prometheus.Registry
	clock *fakeclock.Clock
	stop  func()
}

// startTracker runs a tracker on 127.0.0.1 with a fake clock.
// newClock returns a clock tests move by hand, at t.
func newClock(t time.Time) *fakeclock.Clock {
	c := fakeclock.New()
	c.Set(t)
	return c
}

func startTracker(t *testing.T) *testTracker {
	t.Helper()
	return startTrackerWith(t, DefaultConfig(), Options{})
}

// startTrackerWith runs a tracker with cfg, opts (its registry, logger,
// clock and random source set here) and the gRPC server options gopts.
func startTrackerWith(t *testing.T, cfg Config, opts Options, gopts ...grpc.ServerOption) *testTracker {
	t.Helper()
	clock := newClock(time.Unix(1_000_000, 0))
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.Now = clock.Now
	opts.Rand = seeded
	srv, err := NewServer(cfg, opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	g := grpc.NewServer(gopts...)
	trackerpb.RegisterTrackerServer(g, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			g.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return &testTracker{addr: lis.Addr().String(), srv: srv, reg: reg, clock: clock, stop: stop}
}

func newTestClient(t *testing.T, trackers ...string) *Client {
	t.Helper()
	cfg := DefaultClientConfig()
	cfg.Trackers = trackers
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestAnnounceEndToEnd(t *testing.T) {
	tr := startTracker(t)
	c := newTestClient(t, tr.addr)
	ctx := context.Background()

	announce := func(req *trackerpb.AnnounceRequest) *trackerpb.AnnounceResponse {
		t.Helper()
		resp, err := c.Announce(ctx, req)
		if err != nil {
			t.Fatalf("Announce(%s as %s): %v", req.GetDigest(), req.GetPeerId(), err)
		}
		return resp
	}

	resp := announce(&trackerpb.AnnounceRequest{Digest: blobA, PeerId: "origin-1", Addr: "10.9.0.1:7002", Complete: true, IsOrigin: true, Event: trackerpb.Event_EVENT_COMPLETED})
	if len(resp.GetPeers()) != 0 {
		t.Fatalf("complete origin got peers %v, want none", resp.GetPeers())
	}
	if got := resp.GetInterval().AsDuration(); got != DefaultConfig().AnnounceInterval {
		t.Fatalf("interval = %s, want %s", got, DefaultConfig().AnnounceInterval)
	}
	// An empty host means "the address I announce from".
	announce(&trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-1", Addr: ":7002", Bitfield: []byte{0xf0}, Event: trackerpb.Event_EVENT_STARTED})
	resp = announce(&trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-2", Addr: "0.0.0.0:7003", Event: trackerpb.Event_EVENT_STARTED})

	got := resp.GetPeers()
	if len(got) != 2 {
		t.Fatalf("agent-2 got %d peers %v, want agent-1 then origin-1", len(got), got)
	}
	if got[0].GetPeerId() != "agent-1" || got[0].GetAddr() != "127.0.0.1:7002" || got[0].GetPieceCount() != 4 || got[0].GetComplete() {
		t.Errorf("first peer = %v, want agent-1 at 127.0.0.1:7002 with 4 pieces, partial", got[0])
	}
	if got[1].GetPeerId() != "origin-1" || !got[1].GetIsOrigin() || !got[1].GetComplete() || got[1].GetAddr() != "10.9.0.1:7002" {
		t.Errorf("last peer = %v, want origin-1, complete origin at 10.9.0.1:7002", got[1])
	}

	// num_want bounds the answer, and still keeps the origin.
	resp = announce(&trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-3", Addr: "127.0.0.1:7004", NumWant: 1})
	if len(resp.GetPeers()) != 1 || resp.GetPeers()[0].GetPeerId() != "origin-1" {
		t.Errorf("num_want=1 got %v, want just the origin", resp.GetPeers())
	}

	// Stopped removes the entry at once.
	announce(&trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-1", Addr: ":7002", Event: trackerpb.Event_EVENT_STOPPED})
	resp = announce(&trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-2", Addr: ":7003"})
	for _, p := range resp.GetPeers() {
		if p.GetPeerId() == "agent-1" {
			t.Errorf("agent-1 handed out after EVENT_STOPPED")
		}
	}

	if n := testutil.ToFloat64(tr.srv.metrics.announces.WithLabelValues("started", "ok")); n != 2 {
		t.Errorf("shoal_tracker_announces_total{event=started,result=ok} = %v, want 2", n)
	}
	if n, err := testutil.GatherAndCount(tr.reg, "shoal_tracker_announce_duration_seconds"); err != nil || n != 1 {
		t.Errorf("announce duration histogram: %d series, err %v; want 1", n, err)
	}
	// origin-1, agent-2, agent-3 remain.
	if err := testutil.GatherAndCompare(tr.reg, strings.NewReader(`
# HELP shoal_tracker_peers (peer, blob) entries in the table, including expired ones not yet swept.
# TYPE shoal_tracker_peers gauge
shoal_tracker_peers 3
`), "shoal_tracker_peers"); err != nil {
		t.Errorf("peers gauge: %v", err)
	}
}

func TestAnnounceExpiry(t *testing.T) {
	tr := startTracker(t)
	c := newTestClient(t, tr.addr)
	ctx := context.Background()
	ttl := DefaultConfig().PeerTTL
	if _, err := c.Announce(ctx, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "quiet", Addr: "127.0.0.1:7002"}); err != nil {
		t.Fatal(err)
	}
	tr.clock.Advance(ttl - time.Second)
	resp, err := c.Announce(ctx, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "asker", Addr: "127.0.0.1:7003"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetPeers()) != 1 {
		t.Fatalf("just before the TTL got %v, want the quiet peer", resp.GetPeers())
	}
	tr.clock.Advance(time.Second)
	resp, err = c.Announce(ctx, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "asker", Addr: "127.0.0.1:7003"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetPeers()) != 0 {
		t.Fatalf("a peer that did not re-announce within the TTL was handed out: %v", resp.GetPeers())
	}
}

func TestAnnounceRejectsInvalid(t *testing.T) {
	tr := startTracker(t)
	c := newTestClient(t, tr.addr)
	tests := []struct {
		name string
		req  *trackerpb.AnnounceRequest
		want string
	}{
		{"bad digest", &trackerpb.AnnounceRequest{Digest: "sha256:nothex", PeerId: "p", Addr: "127.0.0.1:1"}, "invalid digest"},
		{"no peer id", &trackerpb.AnnounceRequest{Digest: blobA, Addr: "127.0.0.1:1"}, "peer_id"},
		{"long peer id", &trackerpb.AnnounceRequest{Digest: blobA, PeerId: strings.Repeat("x", 129), Addr: "127.0.0.1:1"}, "peer_id"},
		{"no port", &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "p", Addr: "127.0.0.1"}, "host:port"},
		{"port zero", &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "p", Addr: "127.0.0.1:0"}, "invalid port"},
		{"long locality", &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "p", Addr: "127.0.0.1:1", Locality: strings.Repeat("z", 200)}, "locality"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Announce(context.Background(), tt.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error %v, want InvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v does not explain %q", err, tt.want)
			}
		})
	}
	if n := testutil.ToFloat64(tr.srv.metrics.announces.WithLabelValues("none", "invalid")); n != float64(len(tests)) {
		t.Errorf("invalid announces counted %v, want %d", n, len(tests))
	}
}

// A tracker outage moves every agent to the same next tracker (by rank),
// and back when it has recovered and its cooldown has passed.
func TestClientFailsOverInRankOrder(t *testing.T) {
	t1, t2 := startTracker(t), startTracker(t)
	c := newTestClient(t, t1.addr, t2.addr)
	ctx := context.Background()
	order := c.Order(blobA)
	first, second := t1, t2
	if order[0] == t2.addr {
		first, second = t2, t1
	}

	req := &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "a", Addr: "127.0.0.1:7002"}
	if _, err := c.Announce(ctx, req); err != nil {
		t.Fatal(err)
	}
	if first.srv.Table().Len() != 1 || second.srv.Table().Len() != 0 {
		t.Fatalf("announce went to the wrong tracker: first has %d entries, second %d", first.srv.Table().Len(), second.srv.Table().Len())
	}

	first.stop()
	if _, err := c.Announce(ctx, req); err != nil {
		t.Fatalf("announce with the first tracker down: %v", err)
	}
	if second.srv.Table().Len() != 1 {
		t.Fatalf("failover did not reach the second tracker")
	}
	if got := c.Order(blobA); got[0] != second.addr {
		t.Fatalf("during cooldown Order = %v, want the failed tracker last", got)
	}

	second.stop()
	_, err := c.Announce(ctx, req)
	if err == nil || !strings.Contains(err.Error(), "every tracker failed") {
		t.Fatalf("with every tracker down, error = %v, want one saying every tracker failed", err)
	}
}

// An announce the tracker rejects as invalid is not retried on the next
// tracker, which would reject it too, and does not put the tracker in
// cooldown.
func TestClientDoesNotRetryInvalidAnnounces(t *testing.T) {
	t1, t2 := startTracker(t), startTracker(t)
	c := newTestClient(t, t1.addr, t2.addr)
	before := c.Order(blobA)
	_, err := c.Announce(context.Background(), &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "", Addr: "127.0.0.1:1"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("error %v, want InvalidArgument", err)
	}
	total := testutil.ToFloat64(t1.srv.metrics.announces.WithLabelValues("none", "invalid")) +
		testutil.ToFloat64(t2.srv.metrics.announces.WithLabelValues("none", "invalid"))
	if total != 1 {
		t.Fatalf("invalid announce reached trackers %v times, want 1", total)
	}
	if after := c.Order(blobA); after[0] != before[0] {
		t.Fatalf("an invalid announce put tracker %s in cooldown", before[0])
	}
}

func TestIsHostPortMatchesJoinHostPort(t *testing.T) {
	for _, addr := range []string{"10.0.0.1:7002", "[::1]:7002", "[1.2.3.4]:80", "[fe80::1%eth0]:1", "host:07", "a:1", "[::1]:", ":80"} {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("SplitHostPort(%q): %v", addr, err)
		}
		if got, want := isHostPort(addr, host, port), net.JoinHostPort(host, port) == addr; got != want {
			t.Errorf("isHostPort(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestIsSHA256DigestAgreesWithDigestParse(t *testing.T) {
	valid := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	for _, d := range []string{valid, strings.ToUpper(valid), valid[:len(valid)-1], valid + "0", "sha512:" + valid[7:], "sha256:" + strings.Repeat("g", 64)} {
		_, err := digest.Parse(d)
		if isSHA256Digest(d) && err != nil {
			t.Errorf("isSHA256Digest(%q) but digest.Parse: %v", d, err)
		}
		if d == valid && !isSHA256Digest(d) {
			t.Errorf("isSHA256Digest(%q) = false", d)
		}
	}
}
