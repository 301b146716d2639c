package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// startGC creates the node's garbage collector, installs its guard in the
// registry API, starts its schedule, and serves the admin API on
// cfg.AdminListen. The returned function stops all of it.
func startGC(ctx context.Context, cfg *Config, d storage.Driver, srv *origin.Server, log *slog.Logger, reg prometheus.Registerer) (func(), error) {
	host, _ := os.Hostname()
	runner, err := gc.NewRunner(d, cfg.GC, gc.RunnerOptions{
		Holder:     fmt.Sprintf("%s:%d", host, os.Getpid()),
		Deleter:    gc.APIDeleter{Driver: d, API: srv},
		Logger:     log.With("component", "gc"),
		Registerer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	srv.SetReferenceGuard(gc.NewGuard(d))
	gctx, cancel := context.WithCancel(ctx)
	scheduled := make(chan struct{})
	go func() {
		defer close(scheduled)
		runner.Schedule(gctx)
	}()

	var admin *http.Server
	if cfg.AdminListen != "" {
		ln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("admin API: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/admin/v1/gc", gc.NewAdminHandler(runner))
		admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		log.Info("admin API serving", "addr", "http://"+ln.Addr().String())
		go func() {
			if err := admin.Serve(ln); err != nil && err != http.ErrServerClosed {
				log.Error("admin API stopped", "err", err)
			}
		}()
	}
	return func() {
		runner.Cancel()
		cancel()
		<-scheduled
		if admin != nil {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			_ = admin.Shutdown(sctx)
		}
	}, nil
}
