package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// AgentOptions describes a peer-agent process.
type AgentOptions struct {
	// Binary is the peer-agent binary (Workspace.Build(ctx, "peer-agent", ...)).
	Binary string
	// Name tells agents apart in logs and errors; the log is
	// Dir/agent-<Name>.log (Dir/agent.log without a name).
	Name string
	// Origin is the origin's registry URL (http://host:port).
	Origin string
	// Seeders are origin seeder gRPC addresses (--origin-seeders).
	Seeders []string
	// Trackers are tracker gRPC addresses (--tracker).
	Trackers []string
	// CacheDir is the piece store directory; empty means Dir/cache-<Name>.
	CacheDir string
	// Dir receives the log (and the cache when CacheDir is empty).
	Dir string
	// Args are extra flags, e.g. "--config", path.
	Args []string
	Env  []string
	// ReadyTimeout bounds the wait for /readyz; zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// AgentServer is a started peer-agent. Its Server's Addr is the mirror HTTP
// address (registry API, /metrics, /readyz).
type AgentServer struct {
	*Server
	// PeerAddr is the agent's shoal.peer.v1 gRPC address.
	PeerAddr string
}

// StartAgent starts `peer-agent --listen <free> --peer-listen <free>` on
// 127.0.0.1 and waits until GET /readyz answers 200.
func StartAgent(ctx context.Context, opts AgentOptions) (*AgentServer, error) {
	if opts.Origin == "" {
		return nil, fmt.Errorf("starting peer-agent: no origin URL")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("starting peer-agent: %w", err)
	}
	suffix := ""
	if opts.Name != "" {
		suffix = "-" + opts.Name
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(opts.Dir, "cache"+suffix)
	}
	var peerAddr string
	s, err := startServer(ctx, func(addr string) (Options, error) {
		var err error
		if peerAddr, err = FreeAddr(); err != nil {
			return Options{}, err
		}
		args := []string{"--listen", addr, "--peer-listen", peerAddr, "--origin", opts.Origin, "--cache-dir", cacheDir}
		if opts.Name != "" {
			args = append(args, "--peer-id", "agent"+suffix)
		}
		if len(opts.Seeders) > 0 {
			args = append(args, "--origin-seeders", strings.Join(opts.Seeders, ","))
		}
		if len(opts.Trackers) > 0 {
			args = append(args, "--tracker", strings.Join(opts.Trackers, ","))
		}
		return Options{
			Name:         "peer-agent" + suffix + " " + addr,
			Path:         opts.Binary,
			Args:         append(args, opts.Args...),
			Env:          opts.Env,
			LogPath:      filepath.Join(opts.Dir, "agent"+suffix+".log"),
			Ready:        HTTPReady("http://" + addr + "/readyz"),
			ReadyTimeout: opts.ReadyTimeout,
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return &AgentServer{Server: s, PeerAddr: peerAddr}, nil
}
