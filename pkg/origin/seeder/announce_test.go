package seeder

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/cluster"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/pkg/tracker"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// recorder is an Announcer that records requests and answers with a fixed
// interval, or fails.
type recorder struct {
	mu       sync.Mutex
	reqs     []*trackerpb.AnnounceRequest
	interval time.Duration
	fail     bool
}

func (r *recorder) Announce(_ context.Context, req *trackerpb.AnnounceRequest) (*trackerpb.AnnounceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	if r.fail {
		return nil, errors.New("every tracker failed")
	}
	return &trackerpb.AnnounceResponse{Interval: durationpb.New(r.interval)}, nil
}

func (r *recorder) requests() []*trackerpb.AnnounceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*trackerpb.AnnounceRequest(nil), r.reqs...)
}

func (r *recorder) waitFor(t *testing.T, n int) []*trackerpb.AnnounceRequest {
	t.Helper()
	var reqs []*trackerpb.AnnounceRequest
	if err := eventually.Wait(eventually.Timeout, func() bool {
		reqs = r.requests()
		return len(reqs) >= n
	}); err != nil {
		t.Fatalf("waiting for %d announces: %v; got %d", n, err, len(reqs))
	}
	return reqs
}

// An owner announces a blob as a complete origin when it is first asked
// for its metainfo, re-announces at the tracker's interval, and says
// STOPPED when it shuts down.
func TestOwnerAnnouncesAndReannounces(t *testing.T) {
	d := inmemory.New()
	dg := putBlob(t, d, []byte("announce me"))
	rec := &recorder{interval: 20 * time.Millisecond}
	s := startSeeder(t, d, func(c *Config, o *Options, addr string) {
		o.Announcer = rec
		o.Advertise = "origin-a.example:7002"
		o.Members = staticMembers{self: cluster.Member{Name: "a", Addr: addr}, members: []cluster.Member{{Name: "a", Addr: addr}}}
	})
	if got := rec.requests(); len(got) != 0 {
		t.Fatalf("announced before any request: %v", got)
	}
	getMetainfo(t, s.client(), dg)
	reqs := rec.waitFor(t, 3)
	for i, r := range reqs[:3] {
		want := trackerpb.Event_EVENT_UNSPECIFIED
		if i == 0 {
			want = trackerpb.Event_EVENT_COMPLETED
		}
		if r.GetDigest() != dg.String() || !r.GetIsOrigin() || !r.GetComplete() || r.GetAddr() != "origin-a.example:7002" ||
			r.GetPeerId() != "origin-a@origin-a.example:7002" || r.GetEvent() != want {
			t.Fatalf("announce %d = %v; want %s complete origin origin-a@origin-a.example:7002, event %s", i, r, dg, want)
		}
	}
	// More metainfo requests do not start more announce loops.
	getMetainfo(t, s.client(), dg)
	if n := counter(t, s.m.announcedBlobsNow); n != 1 {
		t.Errorf("announced blobs = %.0f, want 1", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	reqs = rec.requests()
	if last := reqs[len(reqs)-1]; last.GetEvent() != trackerpb.Event_EVENT_STOPPED {
		t.Errorf("last announce after Close = %v, want STOPPED", last)
	}
}

// Trackers being down never fails a request; the announce is retried.
func TestTrackerOutageFailsNothing(t *testing.T) {
	d := inmemory.New()
	blob, _ := randomBlob(t, 100_000)
	dg := putBlob(t, d, blob)
	rec := &recorder{fail: true}
	s := startSeeder(t, d, func(c *Config, o *Options, _ string) {
		o.Announcer = rec
		c.AnnounceInterval = 20 * time.Millisecond
	})
	m := getMetainfo(t, s.client(), dg)
	if got := fetchAll(t, s.client(), m); len(got) != len(blob) {
		t.Fatalf("download with trackers down returned %d bytes", len(got))
	}
	rec.waitFor(t, 3)
	if n := counter(t, s.m.announces.WithLabelValues("error")); n < 3 {
		t.Errorf("failed announces = %.0f, want retries", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, r := range rec.requests() {
		if r.GetEvent() == trackerpb.Event_EVENT_STOPPED {
			t.Error("STOPPED sent for a blob no tracker ever accepted")
		}
	}
}

func TestNonOwnerDoesNotAnnounce(t *testing.T) {
	d := inmemory.New()
	members := []cluster.Member{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "b"}}
	blob, _ := blobOwnedBy(t, members, "a", 1000)
	dg := putBlob(t, d, blob)
	rec := &recorder{interval: time.Second}
	s := startSeeder(t, d, func(c *Config, o *Options, addr string) {
		c.Replicas = 1
		o.Announcer = rec
		o.Members = staticMembers{self: members[1], members: members}
	})
	m := getMetainfo(t, s.client(), dg)
	fetchAll(t, s.client(), m)
	// track, which starts a blob's announcements, runs within the calls
	// that serve it: once they have answered, a blob it was not called
	// for will never be announced. No waiting for what must not happen.
	s.annMu.Lock()
	_, tracked := s.announce[dg]
	s.annMu.Unlock()
	if tracked {
		t.Fatal("the non-owner set out to announce the blob")
	}
	if got := rec.requests(); len(got) != 0 {
		t.Fatalf("non-owner announced: %v", got)
	}
	if s.cache.has(dg) {
		t.Error("non-owner cached a blob it does not own")
	}
}

// With a real tracker, an agent that announces after asking the origin for
// metainfo is handed the origin seeder's address.
func TestAgentFindsOriginThroughTracker(t *testing.T) {
	tcfg := tracker.DefaultConfig()
	ts, err := tracker.NewServer(tcfg, tracker.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	trackerpb.RegisterTrackerServer(gs, ts)
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	ccfg := tracker.DefaultClientConfig()
	ccfg.Trackers = []string{ln.Addr().String()}
	tc, err := tracker.NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()

	d := inmemory.New()
	dg := putBlob(t, d, []byte("find the origin"))
	s := startSeeder(t, d, func(_ *Config, o *Options, addr string) {
		o.Announcer = tc
		o.Advertise = addr
	})
	getMetainfo(t, s.client(), dg)
	var peers []*trackerpb.PeerInfo
	if err := eventually.Wait(eventually.Timeout, func() bool {
		resp, err := tc.Announce(context.Background(), &trackerpb.AnnounceRequest{
			Digest: dg.String(), PeerId: "agent-1", Addr: "127.0.0.1:9999", Event: trackerpb.Event_EVENT_STARTED, Bitfield: []byte{0},
		})
		if err != nil {
			t.Fatal(err)
		}
		peers = resp.GetPeers()
		return len(peers) > 0
	}); err != nil {
		t.Fatalf("waiting for the tracker to hand out the origin: %v; last peers %v", err, peers)
	}
	if p := peers[0]; len(peers) != 1 || p.GetAddr() != s.addr || !p.GetIsOrigin() || !p.GetComplete() {
		t.Fatalf("tracker handed out %v, want only the origin seeder at %s", peers, s.addr)
	}
}

// A non-owner asked for a blob whose metainfo is already stored wakes the
// owner, which caches and announces it, so the swarm is sent to the owner.
func TestNonOwnerWakesOwner(t *testing.T) {
	d := inmemory.New()
	var mu sync.Mutex
	addrs := map[string]string{}
	list := func() []cluster.Member {
		mu.Lock()
		defer mu.Unlock()
		return []cluster.Member{{Name: "a", Addr: addrs["a"]}, {Name: "b", Addr: addrs["b"]}}
	}
	blob, _ := blobOwnedBy(t, []cluster.Member{{Name: "a"}, {Name: "b"}}, "a", 2<<20)
	dg := putBlob(t, d, blob)
	rec := &recorder{interval: time.Minute}
	start := func(name string, ann Announcer) *testSeeder {
		return startSeeder(t, d, func(c *Config, o *Options, addr string) {
			mu.Lock()
			addrs[name] = addr
			mu.Unlock()
			c.Replicas = 1
			o.Members = dynamicMembers{self: name, list: list}
			if ann != nil {
				o.Announcer = ann
			}
		})
	}
	m, err := metainfo.Compute(bytes.NewReader(blob), dg, int64(len(blob)), metainfo.PieceLengthFor(int64(len(blob))))
	if err != nil {
		t.Fatal(err)
	}
	if err := metainfo.Store(context.Background(), d, m); err != nil {
		t.Fatal(err)
	}
	a := start("a", rec)
	b := start("b", nil)
	before := len(rec.requests())

	getMetainfo(t, b.client(), dg)
	if n := counter(t, b.m.metainfoProxied.WithLabelValues("ok")); n != 0 {
		t.Fatalf("b asked the owner for stored metainfo (%.0f times)", n)
	}
	var cached bool
	var announces int
	var asked float64
	if err := eventually.Wait(eventually.Timeout, func() bool {
		cached, announces = a.cache.has(dg), len(rec.requests())
		asked = counter(t, a.m.metainfoRequests.WithLabelValues("ok"))
		return cached && announces > before && asked > 0
	}); err != nil {
		t.Fatalf("waiting for the owner to wake: %v; cached %v, announces %d (before %d), metainfo requests %.0f", err, cached, announces, before, asked)
	}
	// Asking again within the announce interval does not wake it again.
	// The wake-up itself runs in the background, so a second one would
	// reach the owner at no particular time; b decides whether to wake
	// while it answers, recording when it last did, so that record is
	// what is checked.
	b.wokenMu.Lock()
	woke, _ := b.woken.Get(dg)
	b.wokenMu.Unlock()
	getMetainfo(t, b.client(), dg)
	b.wokenMu.Lock()
	again, _ := b.woken.Get(dg)
	b.wokenMu.Unlock()
	if !again.Equal(woke) {
		t.Errorf("b woke the owner again at %s, %s after the first wake-up, within the %s announce interval", again, again.Sub(woke), b.cfg.AnnounceInterval)
	}
	if n := counter(t, a.m.metainfoRequests.WithLabelValues("ok")); n != 1 {
		t.Errorf("owner got %.0f metainfo requests, want 1 (one wake-up)", n)
	}
}
