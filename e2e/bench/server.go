package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// server is one registry process under test: Shoal's origin or the reference registry.
type server struct {
	name    string // column heading in the report
	dataDir string // storage root, its own temp dir
	// graceful: the process must exit cleanly on SIGTERM. True for Shoal's origin; the reference
	// registry as configured by the registry:2 image has no drain timeout and dies by the signal.
	graceful bool
	*testenv.Server
}

// referenceConfig is the configuration the registry:2 image ships (distribution-library-image):
// in-memory blob descriptor cache, info logging, storage health check. testenv's registry config
// is tuned for interoperability tests and has no descriptor cache; benchmarking registry:2 as
// people run it is the point here, so the bench writes its own. Deletes are enabled as in
// testenv; they cost nothing when unused.
const referenceConfig = `version: 0.1
log:
  level: %s
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
http:
  addr: %q
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`

// limitsOffName is the second column of -against limits-off.
const limitsOffName = "Shoal, limits off"

// limitsOnConfig is the origin's defaults with its per-client connection
// cap counting loopback clients too (by default loopback is exempt, and
// the load generator is on loopback): every deadline and cap is paid for.
const limitsOnConfig = `connections:
  exempt: []
`

// limitsOffConfig turns off what issue 13 added to the request path: the
// listener's header and idle deadlines, the per-client connection and
// upload-session caps, the body progress deadline and the storage call
// timeout (with it the outage breaker's timing). What has no off switch
// (manifest reference and validation limits, the catalog cache) is a
// bound that a benchmark's requests never reach.
const limitsOffConfig = `readHeaderTimeout: 0s
idleTimeout: 0s
connections:
  maxPerClient: 0
registry:
  bodyTimeout: 0s
  storageTimeout: 0s
  maxUploadSessionsPerClient: 0
`

// startOrigin runs Shoal's origin on a filesystem storage rooted in its own temp dir, with
// configYAML (if any) as its --config file. name is the report column.
func startOrigin(ctx context.Context, bin, workDir, name, configYAML string) (*server, error) {
	slug := strings.NewReplacer(",", "", " ", "-").Replace(strings.ToLower(name))
	dataDir := filepath.Join(workDir, slug+"-data")
	logDir := filepath.Join(workDir, slug)
	for _, d := range []string{dataDir, logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating origin dir: %w", err)
		}
	}
	var args []string
	if configYAML != "" {
		path := filepath.Join(logDir, "origin.yaml")
		if err := os.WriteFile(path, []byte(configYAML), 0o644); err != nil {
			return nil, fmt.Errorf("writing the origin's config: %w", err)
		}
		args = []string{"--config", path}
	}
	s, err := testenv.StartOrigin(ctx, testenv.OriginOptions{Binary: bin, Storage: "file://" + dataDir, Dir: logDir, Args: args})
	if err != nil {
		return nil, err
	}
	return &server{name: name, dataDir: dataDir, graceful: true, Server: s}, nil
}

// startReference runs the reference registry with the registry:2 image's configuration.
// name is the report column: "registry:2", or "Shoal" when the reference stands in for the origin.
func startReference(ctx context.Context, bin, workDir, name, logLevel string) (*server, error) {
	slug := strings.NewReplacer(":", "", " ", "-", "/", "-").Replace(strings.ToLower(name))
	dataDir := filepath.Join(workDir, slug+"-data")
	logDir := filepath.Join(workDir, slug)
	for _, d := range []string{dataDir, logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating registry dir: %w", err)
		}
	}
	addr, err := testenv.FreeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(logDir, "registry.yml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, referenceConfig, logLevel, dataDir, addr), 0o644); err != nil {
		return nil, fmt.Errorf("writing registry config: %w", err)
	}
	p, err := testenv.Start(ctx, testenv.Options{
		Name:    name + " (registry " + addr + ")",
		Path:    bin,
		Args:    []string{"serve", cfgPath},
		LogPath: filepath.Join(logDir, "registry.log"),
		Ready:   testenv.HTTPReady("http://" + addr + "/v2/"),
	})
	if err != nil {
		return nil, err
	}
	return &server{name: name, dataDir: dataDir, Server: &testenv.Server{Process: p, Addr: addr}}, nil
}

// stop sends SIGTERM (the graceful stop both servers implement), SIGKILL if it takes too long.
func (s *server) stop() error {
	return s.Stop(testenv.DefaultStopTimeout)
}
