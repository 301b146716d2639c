// Package agent assembles the peer-agent: the registry mirror
// (pkg/peer/mirror) on an HTTP listener, the P2P engine (pkg/peer/swarm)
// serving the peer protocol on a gRPC listener, the tracker client, metrics
// and health endpoints, and graceful shutdown. cmd/peer-agent is a thin
// wrapper over it, and tests run agents in-process with it.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/shoal-dev/shoal/internal/connlimit"
	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/peer/mirror"
	"github.com/shoal-dev/shoal/pkg/peer/swarm"
	"github.com/shoal-dev/shoal/pkg/tracker"
)

// Flow-control windows of peer connections (see Listen).
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)

// peerStreamsPerConn bounds concurrent calls on one connection to the peer
// service. Another agent holds one stream per blob the two exchange: 256
// is far above what two agents pull at once.
const peerStreamsPerConn = 256

// Agent is a running peer-agent's parts, listeners bound.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	httpLn  net.Listener
	peerLn  net.Listener
	swarm   *swarm.Swarm
	keys    *originKeys
	tracker *tracker.Client
	grpc    *grpc.Server
	http    *http.Server
	checks  *checker
	ready   atomic.Bool
	// unlock releases the cache directory, claimed by Listen and held
	// until Run has closed the piece store.
	unlock func() error
}

// Listen claims the cache directory, binds the agent's listeners and
// builds its parts; Run serves. A second agent on the same cache directory,
// in this process or another, fails here: two would each evict and rewrite
// what the other believes it holds.
func Listen(cfg Config, log *slog.Logger) (a *Agent, err error) {
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	serverTLS, err := cfg.TLS.ServerConfig()
	if err != nil {
		return nil, err
	}
	clientTLS, err := cfg.TLS.ClientConfig()
	if err != nil {
		return nil, err
	}
	mtls := cfg.TLS.MutualTLS()
	if mtls {
		if cfg.Swarm.PeerID, err = certPeerID(&serverTLS.Certificates[0], cfg.Swarm.PeerID); err != nil {
			return nil, err
		}
	}
	unlock, err := daemon.LockDir(cfg.CacheDir)
	if err != nil {
		if inUse := (*daemon.DirInUseError)(nil); errors.As(err, &inUse) {
			return nil, fmt.Errorf("cache directory: %w; is another peer-agent running? Give each its own cacheDir (--cache-dir)", err)
		}
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	a = &Agent{cfg: cfg, log: log, reg: prometheus.NewRegistry(), unlock: unlock}
	// The error returns set a to nil before this runs: close what was
	// opened through its own variable.
	built := a
	defer func() {
		if err != nil {
			built.closeListeners()
			_ = built.unlock()
		}
	}()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if a.peerLn, err = net.Listen("tcp", cfg.PeerListen); err != nil {
		return nil, fmt.Errorf("listening for peers: %w", err)
	}
	httpLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening for the mirror: %w", err)
	}
	// The mirror serves plain HTTP: a client past its cap is answered 429.
	if a.httpLn, err = connlimit.Wrap(httpLn, cfg.Connections, true, connlimit.NewAgentMetrics(a.reg)); err != nil {
		httpLn.Close()
		return nil, fmt.Errorf("listening for the mirror: %w", err)
	}

	dialOpts := []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Pieces are 4 MiB: a stream window of one piece and a connection
		// window of several keep a pipelined peer sending instead of
		// waiting for window updates (gRPC's default starts at 64 KiB).
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
	}
	if clientTLS != nil {
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	} else {
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(insecureCreds()))
	}
	if len(cfg.Tracker.Trackers) > 0 {
		tc := cfg.Tracker
		tc.DialOptions = dialOpts
		if a.tracker, err = tracker.NewClient(tc); err != nil {
			return nil, err
		}
	}

	mc := cfg.Mirror
	mc.Origin = cfg.Origin
	var client *http.Client
	if clientTLS != nil {
		// The origin's registry API is checked by its own name, not the
		// peers' shared serverName.
		originTLS := clientTLS.Clone()
		originTLS.ServerName = ""
		client = &http.Client{Transport: mirror.NewTransport(mc, originTLS)}
	}
	keysClient := client
	if keysClient == nil {
		keysClient = &http.Client{Transport: mirror.NewTransport(mc, nil)}
	}
	if a.keys, err = newOriginKeys(cfg.Swarm.OriginKeys, cfg.Origin, keysClient, log); err != nil {
		return nil, err
	}

	sc := cfg.Swarm
	sc.Seeders = cfg.OriginSeeders
	sc.IngressLimit = int64(cfg.IngressLimit)
	sc.EgressLimit = int64(cfg.EgressLimit)
	configured := cfg.AdvertiseAddr
	if configured == "" {
		configured = sc.AdvertiseAddr
	}
	actx, cancel := context.WithTimeout(context.Background(), cfg.Mirror.OriginDialTimeout)
	adv := chooseAdvertise(actx, configured, a.peerLn.Addr().String(), cfg.Tracker.Trackers, sourceIP)
	cancel()
	sc.AdvertiseAddr = adv.Addr
	a.swarm, err = swarm.New(sc, cfg.CacheDir, int64(cfg.CacheQuota), swarm.Options{
		Tracker: a.tracker, DialOptions: dialOpts, Keys: a.keys, Logger: log, Registerer: a.reg, RequireIdentity: mtls,
		ServerTLS: serverTLS, ClientTLS: clientTLS, PeerListen: a.peerLn.Addr().String(),
	})
	if err != nil {
		return nil, err
	}

	a.checks = newChecker(&checker{
		origin: cfg.Origin, client: keysClient, originTimeout: cfg.Mirror.OriginTimeout, dialTimeout: cfg.Swarm.DialTimeout,
		configured: cfg.OriginSeeders, trackers: cfg.Tracker.Trackers, advertise: adv, tls: clientTLS,
		setSeeders: a.swarm.SetSeeders, log: log,
	}, a.reg)
	var blobs mirror.Blobs = blobSource{a.swarm}
	// The origin keys that verify capabilities also tell the mirror whose
	// a bearer token is, for its record of the origin's yeses while the
	// origin is down. Held keys only, never a fetch: the mirror asks while
	// the origin cannot answer, and capabilities bring a rotated key in.
	m, err := mirror.New(mc, mirror.Options{Blobs: blobs, Client: client, Logger: log, Registerer: a.reg, Tokens: a.keys.v})
	if err != nil {
		_ = a.swarm.Close(context.Background())
		return nil, err
	}

	gopts := []grpc.ServerOption{
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// One connection cannot hold an unbounded number of streams (each a
		// goroutine and buffers); an honest peer past it waits for a slot.
		// A stream that sends no handshake is ended after dialTimeout.
		grpc.MaxConcurrentStreams(peerStreamsPerConn),
	}
	if serverTLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(serverTLS)))
	}
	a.grpc = grpc.NewServer(gopts...)
	a.swarm.Register(a.grpc)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		serveReadyz(w, a.checks, a.ready.Load())
	})
	a.http = &http.Server{
		Handler:           mirrorFirst(m, mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return a, nil
}

// mirrorFirst hands every request but the agent's own endpoints to the
// mirror as the client sent it. Behind a ServeMux pattern, a path with dot
// segments or doubled slashes would get a 301 to the cleaned path before
// the mirror saw it, and the cleaned path may name another repository; the
// mirror refuses such a path with a 400 instead.
func mirrorFirst(mirror, own http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics", "/healthz", "/readyz":
			own.ServeHTTP(w, r)
		default:
			mirror.ServeHTTP(w, r)
		}
	})
}

func (a *Agent) closeListeners() {
	if a.peerLn != nil {
		a.peerLn.Close()
	}
	if a.httpLn != nil {
		a.httpLn.Close()
	}
}

// MirrorAddr is the bound mirror address.
func (a *Agent) MirrorAddr() string { return a.httpLn.Addr().String() }

// PeerAddr is the bound peer (gRPC) address.
func (a *Agent) PeerAddr() string { return a.peerLn.Addr().String() }

// PeerID is the id the agent announces.
func (a *Agent) PeerID() string { return a.swarm.PeerID() }

// Registry holds the agent's metrics.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// Run serves until ctx ends, then shuts down: /readyz turns 503, clients
// being served get ShutdownGrace to finish, the tracker is told the blobs
// are gone, streams close.
func (a *Agent) Run(ctx context.Context) error {
	// Deferred first, so released last: after the piece store is closed.
	defer a.unlock()
	errc := make(chan error, 2)
	go func() {
		if err := a.grpc.Serve(a.peerLn); err != nil {
			errc <- fmt.Errorf("serving peers: %w", err)
		}
	}()
	go func() {
		if err := a.http.Serve(a.httpLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving the mirror: %w", err)
		}
	}()
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	go a.swarm.Run(runCtx)
	go a.keys.run(runCtx)
	a.ready.Store(true)
	a.log.Info("peer-agent serving", "mirror", a.MirrorAddr(), "peer", a.PeerAddr(), "peerID", a.PeerID(),
		"advertise", a.checks.advertise.Addr, "advertiseFrom", a.checks.advertise.How,
		"origin", a.cfg.Origin, "seeders", a.cfg.OriginSeeders, "trackers", a.cfg.Tracker.Trackers)
	// The first round runs while the agent serves: /readyz says 503 until
	// it is done, and the warning, if any, follows this line.
	go a.checks.run(runCtx, a.cfg.CheckInterval)

	var runErr error
	select {
	case runErr = <-errc:
	case <-ctx.Done():
	}
	a.ready.Store(false)
	a.log.Info("shutting down", "grace", a.cfg.ShutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownGrace)
	defer cancel()
	if err := a.http.Shutdown(sctx); err != nil {
		a.http.Close()
	}
	stopRun()
	if err := a.swarm.Close(sctx); err != nil && runErr == nil {
		runErr = fmt.Errorf("closing the cache: %w", err)
	}
	stopped := make(chan struct{})
	go func() {
		a.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-sctx.Done():
		a.grpc.Stop()
		<-stopped
	}
	if a.tracker != nil {
		_ = a.tracker.Close()
	}
	if runErr == nil {
		a.log.Info("stopped")
	}
	return runErr
}

// blobSource adapts the swarm to the mirror's Blobs.
type blobSource struct{ s *swarm.Swarm }

func (b blobSource) Open(ctx context.Context, d digest.Digest, capability string) (mirror.Blob, error) {
	if len(b.s.Seeders()) == 0 {
		// No seeder to take metainfo from, so nothing could be verified
		// (a blob already cached needs none): a plain proxy at least
		// serves the pull. The checks say so in the log and /readyz.
		if _, ok := b.Local(d); !ok {
			return nil, fmt.Errorf("no origin seeder known: %w", mirror.ErrFromOrigin)
		}
	}
	blob, err := b.s.Open(ctx, d, capability)
	if err != nil {
		return nil, err
	}
	return blob, nil
}

// Local reports a blob complete in the piece store without starting a
// download: the mirror serves it while the origin is unreachable.
func (b blobSource) Local(d digest.Digest) (int64, bool) {
	info, err := b.s.Store().Stat(d)
	if err != nil || !info.Complete {
		return 0, false
	}
	return info.Size, true
}

// certPeerID returns the agent's peer id under mTLS: the one in its
// certificate, the only one trackers and peers accept from it
// (docs/certificates.md). A configured swarm.peerID must agree.
func certPeerID(cert *tls.Certificate, configured string) (string, error) {
	id, err := auth.OwnIdentity(cert)
	if err != nil {
		return "", fmt.Errorf("tls.cert: with tls.ca (mTLS) the agent's certificate must carry its identity, shoal://agent/<peer-id> (shoalctl certs issue --role agent, docs/certificates.md): %w", err)
	}
	if configured != "" && configured != id.ID {
		return "", fmt.Errorf("swarm.peerID %q is not the peer id of the agent's certificate (%s), the only one trackers and peers accept: leave swarm.peerID empty", configured, id)
	}
	return id.ID, nil
}
