package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/cluster"
	"github.com/shoal-dev/shoal/pkg/origin/seeder"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/tracker"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// seederFlags registers the seeder's flags on fs. The returned function
// applies those given on the command line over the config file's values.
func seederFlags(fs *flag.FlagSet) func(*seeder.Config) error {
	listen := fs.String("seeder-listen", "", "gRPC address of the P2P seeder (shoal.peer.v1.Peer) (default "+defaultSeederListen+" when trackers are given, else off: no seeder, no cluster membership)")
	trackers := fs.String("tracker", "", "tracker gRPC addresses (host:port, comma-separated) that owned blobs are announced to; turns the seeder on")
	bind := fs.String("cluster-bind", "", "host:port for origin cluster gossip, UDP and TCP (default 127.0.0.1:7946; 0.0.0.0:7946 when --cluster-join names another host)")
	join := fs.String("cluster-join", "", "origin nodes to join, comma-separated host:port, or dns:NAME:PORT for every address NAME resolves to, looked up again every rejoin interval (a Kubernetes headless Service); empty: start a new cluster")
	name := fs.String("cluster-name", "", "this node's name in the origin cluster, unique and stable across restarts (default: the host name)")
	cacheDir := fs.String("cache-dir", "", "directory for the seeder's local copies of owned blobs (default /var/cache/shoal/origin as root, else ~/.cache/shoal/origin)")
	return func(c *seeder.Config) error {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if set["seeder-listen"] {
			c.Listen = *listen
		}
		if set["tracker"] {
			c.Tracker.Trackers = splitList(*trackers)
		}
		if set["cluster-bind"] {
			host, port, err := net.SplitHostPort(*bind)
			if err != nil {
				return fmt.Errorf("--cluster-bind %q: %w", *bind, err)
			}
			p, err := net.LookupPort("tcp", port)
			if err != nil {
				return fmt.Errorf("--cluster-bind %q: %w", *bind, err)
			}
			c.Cluster.BindAddr, c.Cluster.BindPort = host, p
		}
		if set["cluster-name"] {
			c.Cluster.NodeName = *name
		}
		if set["cluster-join"] {
			c.Cluster.Join = splitList(*join)
		}
		if !set["cluster-bind"] {
			c.Cluster.BindAddr = gossipBind(c.Cluster)
		}
		if set["cache-dir"] {
			c.CacheDir = *cacheDir
		}
		return nil
	}
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// defaultSeederListen is the seeder's address when trackers are given and
// seeder.listen is not: every interface, so that agents on other hosts
// reach it.
const defaultSeederListen = ":7003"

// seeding is what a started seeder gives the rest of the origin.
type seeding struct {
	// stop shuts the seeder down, waiting up to grace for streams in flight.
	stop func()
	// advertise wraps the registry API: its /v2/ answers list the origin
	// cluster's seeders (cluster.AdvertiseSeeders), or nothing with the
	// seeder off.
	advertise func(http.Handler) http.Handler
	// members and server are the cluster view and the seeder, for the
	// admin API (admin_cluster.go); nil with the seeder off.
	members *cluster.Cluster
	server  *seeder.Server
}

// startSeeder starts the P2P seeder when cfg.Listen is set, or trackers are
// (then on defaultSeederListen): cluster membership, the tracker client and
// the gRPC listener. key is the origin cluster's signing key: it signs the
// metainfo served and checks the capabilities agents present.
func startSeeder(cfg *seeder.Config, flags func(*seeder.Config) error, d storage.Driver, key *auth.Key, log *slog.Logger, reg prometheus.Registerer, grace time.Duration) (_ seeding, err error) {
	off := seeding{stop: func() {}, advertise: func(h http.Handler) http.Handler { return h }}
	if err := flags(cfg); err != nil {
		return off, err
	}
	if cfg.Listen == "" && len(cfg.Tracker.Trackers) > 0 {
		cfg.Listen = defaultSeederListen
	}
	if cfg.Listen == "" {
		log.Info("seeder off (no --tracker nor --seeder-listen): agents proxy blobs from the registry API, without P2P")
		return off, nil
	}
	if err := cfg.Validate(); err != nil {
		return off, fmt.Errorf("config: %w", err)
	}
	log = log.With("component", "seeder")
	var cleanup []func()
	undo := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return off, fmt.Errorf("seeder: %w", err)
	}
	cleanup = append(cleanup, func() { _ = ln.Close() })
	advertise, err := advertiseAddr(*cfg, ln.Addr().String(), log)
	if err != nil {
		return off, err
	}

	cc := cfg.Cluster
	cc.Meta = advertise
	members, err := cluster.Start(cc, log)
	if err != nil {
		return off, err
	}
	cleanup = append(cleanup, func() {
		if err := members.Close(2 * time.Second); err != nil {
			log.Warn("leaving the origin cluster", "err", err)
		}
	})
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shoal_origin_cluster_members", Help: "Live origin nodes this node sees, itself included.",
	}, func() float64 { return float64(len(members.Members())) }))

	dial, err := seeder.DialOption(cfg.TLS)
	if err != nil {
		return off, err
	}
	opts := seeder.Options{Key: key, Log: log, Registerer: reg, Members: members, Dial: []grpc.DialOption{dial}, Advertise: advertise}
	if len(cfg.Tracker.Trackers) > 0 {
		tcfg := cfg.Tracker
		tcfg.DialOptions = []grpc.DialOption{dial}
		tc, err := tracker.NewClient(tcfg)
		if err != nil {
			return off, err
		}
		cleanup = append(cleanup, func() { _ = tc.Close() })
		opts.Announcer = tc
	}
	s, err := seeder.New(*cfg, d, opts)
	if err != nil {
		return off, err
	}
	cleanup = append(cleanup, func() {
		if err := s.Close(); err != nil {
			log.Warn("closing seeder", "err", err)
		}
	})

	creds, err := seeder.ServerOption(cfg.TLS)
	if err != nil {
		return off, err
	}
	gs := grpc.NewServer(creds,
		// Pings find connections to hosts that vanished, so their streams
		// (and the upload slots and cache pins they hold) are released.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Agents may ping as often as every 10s, idle or not, without being
		// disconnected for it (gRPC's default minimum is 5 minutes).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// The seeder refuses Exchange streams past maxStreamsPerConn itself
		// (RESOURCE_EXHAUSTED, counted); this bounds every call on one
		// connection, GetMetainfo included, with room for those Exchanges.
		grpc.MaxConcurrentStreams(uint32(2*cfg.MaxStreamsPerConn)),
	)
	peerpb.RegisterPeerServer(gs, s)
	go func() {
		if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Error("seeder gRPC server stopped", "err", err)
		}
	}()
	// The listener is the server's now; stopping the server closes it.
	cleanup[0] = func() { gracefulStop(gs, grace) }
	log.Info("seeder serving", "addr", ln.Addr().String(), "advertise", advertise, "tls", cfg.TLS.Enabled(),
		"cluster", members.LocalAddr(), "join", cfg.Cluster.Join, "trackers", cfg.Tracker.Trackers, "cacheDir", cfg.CacheDir)
	return seeding{stop: undo, advertise: members.AdvertiseSeeders, members: members, server: s}, nil
}

// gossipBind is the address gossip binds when --cluster-bind is not given:
// the configured one, except that a loopback address with a join list
// naming another host becomes 0.0.0.0, since no other host could reach it
// (the default 127.0.0.1 suits a node alone, not one told to join others).
func gossipBind(c cluster.Config) string {
	ip := net.ParseIP(c.BindAddr)
	if c.BindAddr != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return c.BindAddr
	}
	for _, j := range c.Join {
		host, _, err := net.SplitHostPort(strings.TrimPrefix(j, cluster.DNSJoinPrefix))
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return "0.0.0.0"
		}
	}
	return c.BindAddr
}

// gracefulStop lets streams in flight finish for up to grace.
func gracefulStop(gs *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		gs.Stop()
	}
}

// advertiseAddr is the seeder address published to the cluster and the
// trackers: cfg.Advertise; else the listener's address if its host is
// specified; else its port on the cluster's advertise address, on the
// cluster's bind address unless that is loopback, or on the host's private
// IP (what memberlist itself advertises). With none of those, the host
// stays unspecified: trackers fill in the address announces come from,
// but other origin nodes cannot reach this one to ask for metainfo (they
// compute it themselves).
func advertiseAddr(cfg seeder.Config, listening string, log *slog.Logger) (string, error) {
	if cfg.Advertise != "" {
		return cfg.Advertise, nil
	}
	host, _, err := net.SplitHostPort(listening)
	if err != nil {
		return "", fmt.Errorf("seeder: listen address %q: %w", listening, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return listening, nil
	}
	if ip := net.ParseIP(cfg.Cluster.AdvertiseAddr); ip != nil && !ip.IsUnspecified() {
		return seeder.FillHost(listening, ip), nil
	}
	if ip := net.ParseIP(cfg.Cluster.BindAddr); ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
		return seeder.FillHost(listening, ip), nil
	}
	if priv, err := sockaddr.GetPrivateIP(); err == nil && priv != "" {
		return seeder.FillHost(listening, net.ParseIP(priv)), nil
	}
	log.Warn("seeder: no address to advertise found; set seeder.advertise so that other origin nodes can reach this one", "listen", listening)
	return listening, nil
}
