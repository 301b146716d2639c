// Command origin serves the Docker Registry v2 / OCI Distribution API on a
// storage driver: a local directory by default, HDFS in production.
//
//	origin                                   # 127.0.0.1:5000, file:///var/lib/shoal
//	origin --listen :5000 --storage hdfs://nn1:8020,nn2:8020/shoal?user=shoal
//	origin --config /etc/shoal/origin.yaml
//	origin --auth-config /etc/shoal/auth.yaml  # access control (docs/auth.md); open without it
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoal-dev/shoal/internal/connlimit"
	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/origin/seeder"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/drivers"
)

// maxStreamsPerConnection caps the requests one HTTP/2 connection (TLS
// listeners only) may have in flight; past it a stream is refused and the
// connection's others go on. The per-client connection cap bounds
// connections, this what each carries: together a client's share of the
// node. 100 is the least RFC 9113 recommends and more than a registry
// client runs at once (dockerd: 3 layers, containerd: 3 to 10).
const maxStreamsPerConnection = 100

func main() {
	daemon.Exit("origin", run(os.Args[1:]))
}

// about is --help's text above the flags.
const about = `Serves the Docker Registry v2 / OCI Distribution API (push and pull) on a
storage driver, and with a seeder listener the blobs' pieces to the P2P swarm.
Reference of the config file: docs/config-reference.md.

  origin                                   # 127.0.0.1:5000, data in the default directory
  origin --listen :5000 --storage 'hdfs://nn1:8020,nn2:8020/shoal?user=shoal'
  origin --config /etc/shoal/origin.yaml`

func run(args []string) error {
	cfg, applySeederFlags, err := parseConfig(args)
	if err != nil {
		return err
	}
	log, err := cfg.Log.Logger(os.Stderr)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d, err := drivers.Open(ctx, cfg.Storage)
	if err != nil {
		return fmt.Errorf("opening storage %s: %w", cfg.Storage, err)
	}
	d = storage.Instrument(d, storage.NewMetrics(reg))
	srv, err := origin.New(d, cfg.Registry, log, reg)
	if err != nil {
		return err
	}
	srv.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// signingKey is the origin cluster's Ed25519 key: it signs the registry
	// tokens the authorizer issues, and is the key for the seeder's P2P
	// capabilities and metainfo signatures. Loaded whether or not access
	// control is on, so that every node of a cluster signs alike.
	signingKey, err := loadSigningKey(ctx, cfg.SigningKey, d, keySettle)
	if err != nil {
		return err
	}
	authz, err := newAuthorizer(cfg.Auth, signingKey, log, reg)
	if err != nil {
		return err
	}
	srv.SetAuthorizer(authz)
	srv.SetSigningKey(signingKey, cfg.CapabilityTTL)
	runner, stopGC, err := startGC(ctx, &cfg, d, srv, log, reg)
	if err != nil {
		return err
	}
	defer stopGC()
	seeding, err := startSeeder(&cfg.Seeder, applySeederFlags, d, signingKey, log, reg, cfg.ShutdownGrace)
	if err != nil {
		return err
	}
	defer seeding.stop()
	stopAdmin, err := startAdmin(&cfg, adminRoutes{
		gc:      gc.NewAdminHandler(runner),
		cluster: clusterHandler(seeding, cfg.Seeder),
		preheat: preheatHandler(srv, seeding),
	}, authz, log)
	if err != nil {
		return err
	}
	defer stopAdmin()

	tcp, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	ln, err := connlimit.Wrap(tcp, cfg.Connections, cfg.TLS.Cert == "", connlimit.NewOriginMetrics(reg))
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	tlsConfig, err := serverTLS(cfg.TLS.ClientCA)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           seeding.advertise(srv),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: maxStreamsPerConnection},
	}
	scheme := "http"
	if cfg.TLS.Cert != "" {
		scheme = "https"
	}
	log.Info("origin serving", "addr", scheme+"://"+ln.Addr().String(), "storage", cfg.Storage, "driver", d.Name(),
		"auth", authz != nil, "clientCA", cfg.TLS.ClientCA, "signingKey", signingKey.ID())
	errc := make(chan error, 1)
	go func() {
		if cfg.TLS.Cert != "" {
			errc <- hs.ServeTLS(ln, cfg.TLS.Cert, cfg.TLS.Key)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing requests in flight", "grace", cfg.ShutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("stopped")
	return nil
}

// parseConfig reads the command line: the config file, the flags over it,
// and the auth file over its auth: section. The seeder's flags come back
// unapplied; startSeeder applies them.
func parseConfig(args []string) (Config, func(*seeder.Config) error, error) {
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	configPath := fs.String("config", "", "YAML config file (flags given on the command line override it)")
	listen := fs.String("listen", "", "address to serve the registry API on (default 127.0.0.1:5000)")
	storageURL := fs.String("storage", "", "storage URL: file:///dir, inmemory://, hdfs://nn1:8020,nn2:8020/root?user=u (default file:///var/lib/shoal as root, else ~/.local/share/shoal)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate file (PEM); serves HTTPS when set with --tls-key")
	tlsKey := fs.String("tls-key", "", "TLS key file (PEM)")
	tlsClientCA := fs.String("tls-client-ca", "", "CA file (PEM) for client certificates: verified when a client presents one (machines for cert:NAME rules), never required")
	authConfig := fs.String("auth-config", "", "access control file (YAML: htpasswd, groups, rules, token; docs/auth.md); replaces the config's auth: section. Without either the origin is open")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	logFormat := fs.String("log-format", "", "text or json (default text)")
	adminListen := fs.String("admin-listen", "", "address of the admin API, /admin/v1/..., e.g. 127.0.0.1:5001 (default off; without access control anyone reaching it is an admin: keep it on loopback)")
	applySeederFlags := seederFlags(fs)
	if err := daemon.Parse(fs, about, args, os.Stdout); err != nil {
		return Config{}, nil, err
	}
	cfg := DefaultConfig()
	if *configPath != "" {
		if err := cfg.load(*configPath); err != nil {
			return Config{}, nil, err
		}
	}
	override := daemon.Overrides(fs)
	override("listen", &cfg.Listen, *listen)
	override("storage", &cfg.Storage, *storageURL)
	override("tls-cert", &cfg.TLS.Cert, *tlsCert)
	override("tls-key", &cfg.TLS.Key, *tlsKey)
	override("tls-client-ca", &cfg.TLS.ClientCA, *tlsClientCA)
	override("log-level", &cfg.Log.Level, *logLevel)
	override("log-format", &cfg.Log.Format, *logFormat)
	override("admin-listen", &cfg.AdminListen, *adminListen)
	if *authConfig != "" {
		ac, err := auth.LoadConfig(*authConfig)
		if err != nil {
			return Config{}, nil, err
		}
		cfg.Auth = ac
	}
	if err := cfg.validate(); err != nil {
		return Config{}, nil, err
	}
	return cfg, applySeederFlags, nil
}
