// Command tracker runs Shoal's peer discovery service: agents and origin
// seeders announce the blobs they hold over gRPC and get back peers to
// fetch pieces from. Its only state is a TTL'd in-memory table, so a
// restarted tracker is repopulated by the next round of announces.
//
//	tracker                                     # gRPC on 127.0.0.1:7001, metrics on 127.0.0.1:7081
//	tracker --listen :7001 --metrics-listen :7081
//	tracker --config /etc/shoal/tracker.yaml
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/tracker"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	daemon.Exit("tracker", run(ctx, os.Args[1:]))
}

// about is --help's text above the flags.
const about = `Peer discovery for Shoal's P2P swarm: agents and origin seeders announce the
blobs they hold over gRPC and get back peers to fetch pieces from.
Reference of the config file: docs/config-reference.md.

  tracker                                     # gRPC on 127.0.0.1:7001, metrics on 127.0.0.1:7081
  tracker --listen :7001 --metrics-listen :7081
  tracker --config /etc/shoal/tracker.yaml`

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tracker", flag.ContinueOnError)
	configPath := fs.String("config", "", "YAML config file (flags given on the command line override it)")
	listen := fs.String("listen", "", "gRPC address for announces (default 127.0.0.1:7001)")
	metricsListen := fs.String("metrics-listen", "", "HTTP address for /metrics, /healthz, /readyz (default 127.0.0.1:7081)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate file (PEM); both listeners use TLS when set with --tls-key")
	tlsKey := fs.String("tls-key", "", "TLS key file (PEM)")
	tlsClientCA := fs.String("tls-client-ca", "", "CA file (PEM) that gRPC client certificates must chain to (mTLS); tls.ca in the config file")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	logFormat := fs.String("log-format", "", "text or json (default text)")
	if err := daemon.Parse(fs, about, args, os.Stdout); err != nil {
		return err
	}
	cfg := DefaultConfig()
	if *configPath != "" {
		if err := cfg.load(*configPath); err != nil {
			return err
		}
	}
	override := daemon.Overrides(fs)
	override("listen", &cfg.Listen, *listen)
	override("metrics-listen", &cfg.MetricsListen, *metricsListen)
	override("tls-cert", &cfg.TLS.Cert, *tlsCert)
	override("tls-key", &cfg.TLS.Key, *tlsKey)
	override("tls-client-ca", &cfg.TLS.CA, *tlsClientCA)
	override("log-level", &cfg.Log.Level, *logLevel)
	override("log-format", &cfg.Log.Format, *logFormat)
	if err := cfg.validate(); err != nil {
		return err
	}
	log, err := cfg.Log.Logger(os.Stderr)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, nil)
}

// serve runs the tracker until ctx is done, then shuts down gracefully.
// listening, if not nil, is called with the bound addresses once both
// listeners are up (tests listen on port 0).
func serve(ctx context.Context, cfg Config, log *slog.Logger, listening func(grpcAddr, httpAddr string)) error {
	tlsCfg, err := cfg.TLS.ServerConfig()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Client certificates verified against the cluster CA (mTLS) are what
	// announces answer to; without them the tracker trusts what it is told.
	mtls := tlsCfg != nil && tlsCfg.ClientCAs != nil
	srv, err := tracker.NewServer(cfg.Tracker, tracker.Options{Registerer: reg, Logger: log, RequireIdentity: mtls})
	if err != nil {
		return err
	}
	if !mtls {
		log.Warn("no tls.ca: announces are not authenticated, anyone who reaches the tracker can list itself as any peer or an origin; run this way on trusted networks only")
	}

	// Announces are short and many: a pool of stream workers serves them on
	// goroutines whose stacks have already grown, instead of a new goroutine
	// (and its stack growth, ~7% of the tracker's CPU in profiles) per call.
	gopts := []grpc.ServerOption{grpc.NumStreamWorkers(uint32(max(64, 16*runtime.GOMAXPROCS(0))))}
	if tlsCfg != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	g := grpc.NewServer(gopts...)
	trackerpb.RegisterTrackerServer(g, srv)
	gln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening for gRPC: %w", err)
	}
	defer gln.Close()

	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		// Not ready before gRPC serves, nor once shutdown has begun, so a
		// load balancer stops sending announces before they fail.
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /debug/peers", func(w http.ResponseWriter, r *http.Request) {
		// What the tracker knows about one blob, for operators and e2e
		// tests that check agents announced. Which hosts hold which blob
		// is for the cluster only: with mTLS, only to a cluster
		// certificate.
		if mtls {
			if _, err := auth.PeerFromTLS(r.TLS); err != nil {
				http.Error(w, "/debug/peers needs a cluster client certificate (see docs/certificates.md): "+err.Error(), http.StatusForbidden)
				return
			}
		}
		d := r.URL.Query().Get("digest")
		if _, err := digest.Parse(d); err != nil {
			http.Error(w, fmt.Sprintf("digest query parameter: %v", err), http.StatusBadRequest)
			return
		}
		type peerJSON struct {
			ID       string `json:"id"`
			Addr     string `json:"addr"`
			Locality string `json:"locality,omitempty"`
			Complete bool   `json:"complete"`
			Origin   bool   `json:"origin"`
			Pieces   int    `json:"pieces"`
		}
		peers := []peerJSON{}
		for _, p := range srv.Table().Peers(d, time.Now()) {
			peers = append(peers, peerJSON{p.ID, p.Addr, p.Locality, p.Complete, p.Origin, p.Pieces})
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(peers); err != nil {
			log.Debug("writing /debug/peers", "err", err)
		}
	})
	hln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("listening for HTTP: %w", err)
	}
	if tlsCfg != nil {
		// The HTTP side serves scrapers and probes, which do not carry
		// cluster client certificates; a certificate, when given, is
		// verified, for /debug/peers.
		httpTLS := tlsCfg.Clone()
		httpTLS.ClientAuth = tls.NoClientCert
		if mtls {
			httpTLS.ClientAuth = tls.VerifyClientCertIfGiven
		}
		hln = tls.NewListener(hln, httpTLS)
	}
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	sweepCtx, stopSweep := context.WithCancel(context.Background())
	defer stopSweep()
	go srv.Sweep(sweepCtx)

	errc := make(chan error, 2)
	go func() {
		// Serve returns nil after GracefulStop, an error otherwise.
		if err := g.Serve(gln); err != nil {
			errc <- fmt.Errorf("serving gRPC: %w", err)
		}
	}()
	go func() {
		if err := hs.Serve(hln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving HTTP: %w", err)
		}
	}()
	ready.Store(true)
	log.Info("tracker serving", "grpc", gln.Addr().String(), "http", hln.Addr().String(), "tls", tlsCfg != nil,
		"announceInterval", cfg.Tracker.AnnounceInterval.String(), "peerTTL", cfg.Tracker.PeerTTL.String())
	if listening != nil {
		listening(gln.Addr().String(), hln.Addr().String())
	}

	var runErr error
	select {
	case runErr = <-errc:
	case <-ctx.Done():
	}
	ready.Store(false)
	log.Info("shutting down: finishing announces in flight", "grace", cfg.ShutdownGrace.String())
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(cfg.ShutdownGrace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		g.Stop()
		<-stopped
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && runErr == nil {
		runErr = fmt.Errorf("shutting down HTTP: %w", err)
	}
	if runErr == nil {
		log.Info("stopped")
	}
	return runErr
}
