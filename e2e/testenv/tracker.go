package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// TrackerOptions describes a tracker process.
type TrackerOptions struct {
	// Binary is the tracker binary (Workspace.Build(ctx, "tracker", ...)).
	Binary string
	// Dir receives the log, tracker.log.
	Dir string
	// Args are extra flags, e.g. "--config", path.
	Args []string
	Env  []string
	// ReadyTimeout bounds the wait for /readyz; zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// TLS, when set, runs the tracker with mTLS: both listeners serve TLS
	// (--tls-cert, --tls-key) and gRPC requires certificates of the
	// cluster CA TLS.CA (--tls-client-ca). The HTTP listener is then
	// HTTPS, probed trusting TLS.CA, and the server's TLS field says so.
	TLS *TLSFiles
}

// TrackerServer is a started tracker. Its Server's Addr is the HTTP address of
// /metrics, /readyz and /debug/peers.
type TrackerServer struct {
	*Server
	// GRPCAddr is the shoal.tracker.v1 address agents and seeders
	// announce to.
	GRPCAddr string
}

// StartTracker starts `tracker --listen <free> --metrics-listen <free>` on
// 127.0.0.1 and waits until GET /readyz answers 200.
func StartTracker(ctx context.Context, opts TrackerOptions) (*TrackerServer, error) {
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("starting tracker: %w", err)
	}
	var tlsArgs []string
	var clientTLS *tls.Config
	scheme := "http://"
	if t := opts.TLS; t != nil {
		var err error
		if clientTLS, err = ClientTLS(t.CA, "", ""); err != nil {
			return nil, fmt.Errorf("starting tracker: %w", err)
		}
		tlsArgs = []string{"--tls-cert", t.Cert, "--tls-key", t.Key, "--tls-client-ca", t.CA}
		scheme = "https://"
	}
	var grpcAddr string
	s, err := startServer(ctx, func(addr string) (Options, error) {
		var err error
		if grpcAddr, err = FreeAddr(); err != nil {
			return Options{}, err
		}
		args := append([]string{"--listen", grpcAddr, "--metrics-listen", addr}, tlsArgs...)
		return Options{
			Name:         "tracker " + grpcAddr,
			Path:         opts.Binary,
			Args:         append(args, opts.Args...),
			Env:          opts.Env,
			LogPath:      filepath.Join(opts.Dir, "tracker.log"),
			Ready:        HTTPSReady(scheme+addr+"/readyz", clientTLS),
			ReadyTimeout: opts.ReadyTimeout,
		}, nil
	})
	if err != nil {
		return nil, err
	}
	s.TLS = clientTLS
	return &TrackerServer{Server: s, GRPCAddr: grpcAddr}, nil
}
