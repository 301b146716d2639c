package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/cluster"
	"github.com/shoal-dev/shoal/pkg/origin/seeder"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/pkg/tracker"
	"github.com/shoal-dev/shoal/proto/peerpb"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

func TestSeederFlagsOverrideConfig(t *testing.T) {
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	apply := seederFlags(fs)
	if err := fs.Parse([]string{
		"--seeder-listen", "127.0.0.1:7002", "--tracker", "t1:7001, t2:7001", "--cluster-bind", "10.1.2.3:7946",
		"--cluster-join", "o1:7946,o2:7946", "--cluster-name", "o3", "--cache-dir", "/srv/cache",
	}); err != nil {
		t.Fatal(err)
	}
	cfg := seeder.DefaultConfig()
	cfg.CacheBytes = 123 // from a config file: flags leave it alone
	if err := apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7002" || !slices.Equal(cfg.Tracker.Trackers, []string{"t1:7001", "t2:7001"}) ||
		cfg.Cluster.BindAddr != "10.1.2.3" || cfg.Cluster.BindPort != 7946 ||
		!slices.Equal(cfg.Cluster.Join, []string{"o1:7946", "o2:7946"}) || cfg.Cluster.NodeName != "o3" ||
		cfg.CacheDir != "/srv/cache" || cfg.CacheBytes != 123 {
		t.Fatalf("config after flags = %+v", cfg)
	}

	fs = flag.NewFlagSet("origin", flag.ContinueOnError)
	apply = seederFlags(fs)
	if err := fs.Parse([]string{"--cluster-bind", "nocolon"}); err != nil {
		t.Fatal(err)
	}
	if err := apply(&cfg); err == nil {
		t.Error("--cluster-bind without a port accepted")
	}
}

func TestSeederConfigSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "origin.yaml")
	if err := os.WriteFile(path, []byte(`
seeder:
  listen: 0.0.0.0:7002
  cacheBytes: 1073741824
  egressBytesPerSecond: 125000000
  tls: {cert: c.pem, key: k.pem, ca: ca.pem}
  tracker: {trackers: [t1:7001], timeout: 1s}
  cluster: {nodeName: o1, bindAddr: 0.0.0.0, join: [o2:7946], probeInterval: 2s}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if err := cfg.load(path); err != nil {
		t.Fatal(err)
	}
	s := cfg.Seeder
	if s.Listen != "0.0.0.0:7002" || s.CacheBytes != 1<<30 || s.EgressBytesPerSecond != 125000000 || s.TLS.CA != "ca.pem" ||
		s.Tracker.Trackers[0] != "t1:7001" || s.Tracker.Timeout.String() != "1s" || s.Cluster.NodeName != "o1" ||
		s.Cluster.ProbeInterval.String() != "2s" || s.Replicas != 2 || s.Cluster.SuspicionMult == 0 {
		t.Fatalf("seeder section decoded as %+v", s)
	}
}

func TestAdvertiseAddr(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name      string
		mut       func(*seeder.Config)
		listening string
		want      string
	}{
		{"explicit", func(c *seeder.Config) { c.Advertise = "seed.example:7002" }, "0.0.0.0:7002", "seed.example:7002"},
		{"specified host", nil, "10.0.0.5:7002", "10.0.0.5:7002"},
		{"cluster advertise", func(c *seeder.Config) { c.Cluster.AdvertiseAddr = "10.0.0.6" }, "0.0.0.0:7002", "10.0.0.6:7002"},
		{"cluster bind", func(c *seeder.Config) { c.Cluster.BindAddr = "10.0.0.7" }, "[::]:7002", "10.0.0.7:7002"},
	} {
		cfg := seeder.DefaultConfig()
		if tc.mut != nil {
			tc.mut(&cfg)
		}
		got, err := advertiseAddr(cfg, tc.listening, log)
		if err != nil || got != tc.want {
			t.Errorf("%s: advertiseAddr = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	// Loopback cluster bind with a wildcard listener: not advertised as
	// loopback (other hosts could not dial it).
	got, err := advertiseAddr(seeder.DefaultConfig(), "0.0.0.0:7002", log)
	if err != nil || got == "127.0.0.1:7002" {
		t.Errorf("advertiseAddr with loopback cluster bind = %q, %v; want a non-loopback address", got, err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The wiring serves the seeder on --seeder-listen, in a one-node cluster,
// announcing to the --tracker, and stops cleanly.
func TestStartSeederServesAndAnnounces(t *testing.T) {
	ts, err := tracker.NewServer(tracker.DefaultConfig(), tracker.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tgs := grpc.NewServer()
	trackerpb.RegisterTrackerServer(tgs, ts)
	go func() { _ = tgs.Serve(tln) }()
	defer tgs.Stop()

	d := inmemory.New()
	blob := []byte("wired")
	dg := digest.FromBytes(blob)
	if err := d.PutContent(context.Background(), "/docker/registry/v2/blobs/sha256/"+dg.Encoded()[:2]+"/"+dg.Encoded()+"/data", blob); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	apply := seederFlags(fs)
	if err := fs.Parse([]string{"--seeder-listen", addr, "--tracker", tln.Addr().String(), "--cluster-bind", "127.0.0.1:0",
		"--cluster-name", "wired", "--cache-dir", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	cfg := seeder.DefaultConfig()
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	seeding, err := startSeeder(&cfg, apply, d, key, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stop := seeding.stop
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var hdr metadata.MD
	capability, err := key.IssueCapability(dg, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx := auth.WithCapability(context.Background(), capability)
	p, err := peerpb.NewPeerClient(conn).GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: dg.String()}, grpc.Header(&hdr))
	if err != nil {
		t.Fatalf("GetMetainfo through the wired seeder: %v", err)
	}
	if p.GetKeyId() != key.ID() || len(p.GetSignature()) == 0 {
		t.Errorf("metainfo from the wired seeder signed by %q, want the origin's key %s", p.GetKeyId(), key.ID())
	}
	if got := hdr.Get(peerwire.OwnersHeader); len(got) != 1 || got[0] != addr {
		t.Errorf("owners header = %v, want [%s]", got, addr)
	}
	// The registry API's /v2/ lists the seeder for agents to learn, also
	// on a 401; other paths do not.
	unauthorized := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	for path, want := range map[string]string{"/v2/": addr, "/v2/app/manifests/v1": ""} {
		rec := httptest.NewRecorder()
		seeding.advertise(unauthorized).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if got := rec.Header().Get(peerwire.SeedersHeader); got != want {
			t.Errorf("GET %s answered %d with %s %q, want %q", path, rec.Code, peerwire.SeedersHeader, got, want)
		}
	}
	tc, err := tracker.NewClient(tracker.ClientConfig{Trackers: []string{tln.Addr().String()}, Timeout: time.Second, Cooldown: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	var peers []*trackerpb.PeerInfo
	if err := eventually.Wait(eventually.Timeout, func() bool {
		resp, err := tc.Announce(context.Background(), &trackerpb.AnnounceRequest{Digest: dg.String(), PeerId: "agent", Addr: "127.0.0.1:9", Bitfield: []byte{0}})
		if err != nil {
			t.Fatal(err)
		}
		peers = resp.GetPeers()
		return len(peers) == 1 && peers[0].GetAddr() == addr && peers[0].GetIsOrigin()
	}); err != nil {
		t.Fatalf("waiting for the tracker to hand out the origin seeder %s: %v; last peers %v", addr, err, peers)
	}
	stop()
	stopped = true
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("seeder still listening after stop")
	}
}

// TestGossipBindsEveryInterfaceToJoinOtherHosts: the default loopback bind
// suits a node alone; told to join another host (by address or by a dns:
// name), a node gossips on every interface unless a bind was chosen.
func TestGossipBindsEveryInterfaceToJoinOtherHosts(t *testing.T) {
	// A --cluster-bind given is kept whatever the join list says.
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	apply := seederFlags(fs)
	if err := fs.Parse([]string{"--cluster-bind", "127.0.0.1:7946", "--cluster-join", "10.0.0.5:7946"}); err != nil {
		t.Fatal(err)
	}
	cfg := seeder.DefaultConfig()
	if err := apply(&cfg); err != nil || cfg.Cluster.BindAddr != "127.0.0.1" {
		t.Errorf("--cluster-bind 127.0.0.1:7946 with a remote join: gossip binds %s (%v), want 127.0.0.1", cfg.Cluster.BindAddr, err)
	}
	fs = flag.NewFlagSet("origin", flag.ContinueOnError)
	apply = seederFlags(fs)
	if err := fs.Parse([]string{"--cluster-join", "dns:origins.shoal.svc:7946"}); err != nil {
		t.Fatal(err)
	}
	cfg = seeder.DefaultConfig()
	if err := apply(&cfg); err != nil || cfg.Cluster.BindAddr != "0.0.0.0" {
		t.Errorf("a dns: join without --cluster-bind: gossip binds %s (%v), want 0.0.0.0", cfg.Cluster.BindAddr, err)
	}
	for _, tc := range []struct {
		bind string
		join []string
		want string
	}{
		{"127.0.0.1", nil, "127.0.0.1"},
		{"127.0.0.1", []string{"127.0.0.1:7946", "localhost:7947"}, "127.0.0.1"},
		{"127.0.0.1", []string{"10.0.0.5:7946"}, "0.0.0.0"},
		{"127.0.0.1", []string{"dns:shoal-origin-headless.shoal.svc:7946"}, "0.0.0.0"},
		{"localhost", []string{"origin-2:7946"}, "0.0.0.0"},
		{"10.0.0.4", []string{"10.0.0.5:7946"}, "10.0.0.4"},
		{"0.0.0.0", []string{"dns:origins:7946"}, "0.0.0.0"},
	} {
		c := cluster.DefaultConfig()
		c.BindAddr, c.Join = tc.bind, tc.join
		if got := gossipBind(c); got != tc.want {
			t.Errorf("bind %s, join %v: gossip binds %s, want %s", tc.bind, tc.join, got, tc.want)
		}
	}
}
