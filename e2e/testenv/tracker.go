package testenv

import (
	"context"
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
	var grpcAddr string
	s, err := startServer(ctx, func(addr string) (Options, error) {
		var err error
		if grpcAddr, err = FreeAddr(); err != nil {
			return Options{}, err
		}
		args := append([]string{"--listen", grpcAddr, "--metrics-listen", addr}, opts.Args...)
		return Options{
			Name:         "tracker " + grpcAddr,
			Path:         opts.Binary,
			Args:         args,
			Env:          opts.Env,
			LogPath:      filepath.Join(opts.Dir, "tracker.log"),
			Ready:        HTTPReady("http://" + addr + "/readyz"),
			ReadyTimeout: opts.ReadyTimeout,
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return &TrackerServer{Server: s, GRPCAddr: grpcAddr}, nil
}
