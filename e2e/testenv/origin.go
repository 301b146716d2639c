package testenv

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// OriginOptions describes an origin process.
type OriginOptions struct {
	// Binary is the origin binary (Workspace.Build(ctx, "origin", ...)).
	Binary string
	// Storage is the storage URL: file:///abs/dir, inmemory://, hdfs://...
	Storage string
	// Dir receives the log, origin.log.
	Dir string
	// Args are extra flags, e.g. "--config", path.
	Args []string
	Env  []string
	// ReadyTimeout bounds the wait for /readyz; zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// StartOrigin starts `origin --listen 127.0.0.1:<free> --storage URL` and
// waits until GET /readyz answers 200.
func StartOrigin(ctx context.Context, opts OriginOptions) (*Server, error) {
	return startOrigin(ctx, opts, nil)
}

// startOrigin is StartOrigin with more flags chosen afresh for each attempt
// (extra ports, taken again when a port clash makes startServer retry).
func startOrigin(ctx context.Context, opts OriginOptions, perAttempt func() ([]string, error)) (*Server, error) {
	if opts.Storage == "" {
		return nil, fmt.Errorf("starting origin: no storage URL")
	}
	return startServer(ctx, func(addr string) (Options, error) {
		args := []string{"--listen", addr, "--storage", opts.Storage}
		if perAttempt != nil {
			more, err := perAttempt()
			if err != nil {
				return Options{}, err
			}
			args = append(args, more...)
		}
		return Options{
			Name:         "origin " + addr,
			Path:         opts.Binary,
			Args:         append(args, opts.Args...),
			Env:          opts.Env,
			LogPath:      filepath.Join(opts.Dir, "origin.log"),
			Ready:        HTTPReady("http://" + addr + "/readyz"),
			ReadyTimeout: opts.ReadyTimeout,
		}, nil
	})
}
