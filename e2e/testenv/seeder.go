package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// SeedingOriginOptions describes an origin node with its P2P seeder and
// cluster membership on.
type SeedingOriginOptions struct {
	// Binary is the origin binary.
	Binary string
	// Storage is the storage URL, shared by the nodes of one cluster.
	Storage string
	// Name is the node's cluster name (unique in the cluster).
	Name string
	// Join lists cluster addresses (SeedingOriginServer.ClusterAddr) of nodes
	// already running; empty starts a new cluster.
	Join []string
	// Trackers are tracker gRPC addresses owned blobs are announced to.
	Trackers []string
	// Dir receives the log (origin.log) and the seeder's cache.
	Dir string
	// Args are extra flags.
	Args []string
	Env  []string
	// ReadyTimeout bounds the wait for /readyz; zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// SeedingOriginServer is a started origin node whose seeder is on. Its Server's
// Addr is the registry API (and /metrics).
type SeedingOriginServer struct {
	*Server
	// SeederAddr is the shoal.peer.v1 gRPC address agents fetch from.
	SeederAddr string
	// ClusterAddr is the memberlist gossip address others join.
	ClusterAddr string
}

// StartSeedingOrigin starts an origin with --seeder-listen, --cluster-bind
// and --cache-dir on fresh 127.0.0.1 ports and directories.
func StartSeedingOrigin(ctx context.Context, opts SeedingOriginOptions) (*SeedingOriginServer, error) {
	if opts.Name == "" {
		return nil, fmt.Errorf("starting seeding origin: no cluster name")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("starting seeding origin: %w", err)
	}
	args := []string{
		"--cluster-name", opts.Name,
		"--cache-dir", filepath.Join(opts.Dir, "seeder-cache"),
	}
	if len(opts.Join) > 0 {
		args = append(args, "--cluster-join", strings.Join(opts.Join, ","))
	}
	if len(opts.Trackers) > 0 {
		args = append(args, "--tracker", strings.Join(opts.Trackers, ","))
	}
	// The seeder and cluster ports are taken with the registry port, for
	// each attempt: a clash on any of them makes the origin exit and the
	// start is retried with fresh ones. The cluster port is probed with
	// TCP only although memberlist also binds UDP on it; a clash there
	// shows the same way.
	var seeder, cluster string
	s, err := startOrigin(ctx, OriginOptions{
		Binary:       opts.Binary,
		Storage:      opts.Storage,
		Dir:          opts.Dir,
		Args:         append(args, opts.Args...),
		Env:          opts.Env,
		ReadyTimeout: opts.ReadyTimeout,
	}, func() ([]string, error) {
		var err error
		if seeder, err = FreeAddr(); err != nil {
			return nil, err
		}
		if cluster, err = FreeAddr(); err != nil {
			return nil, err
		}
		return []string{"--seeder-listen", seeder, "--cluster-bind", cluster}, nil
	})
	if err != nil {
		return nil, err
	}
	return &SeedingOriginServer{Server: s, SeederAddr: seeder, ClusterAddr: cluster}, nil
}
