package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// RegistryOptions describes a reference registry (registry:2) process.
type RegistryOptions struct {
	// Binary is the registry binary (Workspace.Install(ctx, ReferenceRegistry)).
	Binary string
	// RootDir is storage.filesystem.rootdirectory: the same directory an
	// origin serves as file://RootDir.
	RootDir string
	// Dir receives the config file and the log, registry.log.
	Dir string
	// ReadyTimeout bounds the wait for GET /v2/; zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// registryConfig is registry:2's configuration with deletes enabled (the
// conformance suite and GC tests delete) and the background upload purger
// off, so that it never removes upload sessions another process is using.
// The HTTP secret is fixed so that two registries over one directory accept
// each other's upload state.
const registryConfig = `version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
  secret: shoal-e2e-not-a-secret
`

// StartRegistry writes a config for RootDir and starts `registry serve` on
// a free 127.0.0.1 port, waiting until GET /v2/ answers 200.
func StartRegistry(ctx context.Context, opts RegistryOptions) (*Server, error) {
	if opts.RootDir == "" {
		return nil, fmt.Errorf("starting registry: no root directory")
	}
	return startServer(ctx, func(addr string) (Options, error) {
		config := filepath.Join(opts.Dir, "registry.yml")
		if err := os.WriteFile(config, fmt.Appendf(nil, registryConfig, opts.RootDir, addr), 0o644); err != nil {
			return Options{}, fmt.Errorf("writing registry config: %w", err)
		}
		return Options{
			Name:         "registry " + addr,
			Path:         opts.Binary,
			Args:         []string{"serve", config},
			LogPath:      filepath.Join(opts.Dir, "registry.log"),
			Ready:        HTTPReady("http://" + addr + "/v2/"),
			ReadyTimeout: opts.ReadyTimeout,
		}, nil
	})
}
