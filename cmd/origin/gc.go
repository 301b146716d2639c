package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// startGC creates the node's garbage collector, installs its guard in the
// registry API and starts its schedule. The returned function stops it.
func startGC(ctx context.Context, cfg *Config, d storage.Driver, srv *origin.Server, log *slog.Logger, reg prometheus.Registerer) (*gc.Runner, func(), error) {
	host, _ := os.Hostname()
	runner, err := gc.NewRunner(d, cfg.GC, gc.RunnerOptions{
		Holder:     fmt.Sprintf("%s:%d", host, os.Getpid()),
		Deleter:    gc.APIDeleter{Driver: d, API: srv},
		Logger:     log.With("component", "gc"),
		Registerer: reg,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("gc: %w", err)
	}
	srv.SetReferenceGuard(gc.NewGuard(d))
	gctx, cancel := context.WithCancel(ctx)
	scheduled := make(chan struct{})
	go func() {
		defer close(scheduled)
		runner.Schedule(gctx)
	}()
	return runner, func() {
		runner.Cancel()
		cancel()
		<-scheduled
	}, nil
}
