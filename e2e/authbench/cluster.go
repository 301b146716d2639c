package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// binaries are Shoal's commands, built without the race detector.
type binaries struct{ origin, agent, tracker string }

// Users of the htpasswd file. The pulls are bob's: path2/ needs
// credentials, and three rules are tried before the one that lets him.
const (
	puller, pullerPassword = "bob", "bob-secret"
	pusher, pusherPassword = "ci", "ci-secret"
)

// authConfig is the mission's policy from docs/auth.md ("The mission's
// policy"), with the build machines' prefix replaced by loopback, where
// this program pushes from.
const authConfig = `htpasswd: %q
groups:
  builders: [ci, alice]
rules:
  - repositories: ["path2/**"]
    subjects: [user:mallory]
    actions: [pull]
    effect: deny
  - repositories: ["path1/**"]
    subjects: [anonymous]
    actions: [pull]
  - repositories: ["path2/**"]
    subjects: [authenticated]
    actions: [pull]
  - repositories: ["**"]
    subjects: [group:builders]
    machines: ["cidr:127.0.0.0/8", "cert:build-1"]
    actions: [pull, push]
`

// cluster starts the processes of a run and stops every one (by PID) at
// the end.
type cluster struct {
	c    config
	bins binaries
	dir  string

	mu    sync.Mutex
	procs []*testenv.Process
	data  [][]string // per process: its storage and caches

	// The P2P cluster of the agent and P2P benchmarks (startP2P).
	origin  *testenv.SeedingOriginServer
	tracker *testenv.TrackerServer
	agent   *testenv.AgentServer
}

// keep remembers p, to be stopped at the end, and the directories of its
// storage and caches, to be removed then.
func (e *cluster) keep(p *testenv.Process, data ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.procs = append(e.procs, p)
	e.data = append(e.data, data)
}

// stopAll stops every process started, newest first, and removes their
// storage and caches unless -keep-data.
func (e *cluster) stopAll() {
	e.mu.Lock()
	procs, data := e.procs, e.data
	e.procs, e.data = nil, nil
	e.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Stop(testenv.DefaultStopTimeout); err != nil {
			slog.Warn("stopping", "process", procs[i].Name, "err", err)
		}
		if e.c.keepData {
			continue
		}
		for _, d := range data[i] {
			if err := os.RemoveAll(d); err != nil {
				slog.Warn("removing data", "dir", d, "err", err)
			}
		}
	}
}

// writeAuthConfig writes the htpasswd file (bcrypt) and the auth config
// into dir and returns the config's path.
func writeAuthConfig(dir string) (string, error) {
	htpasswd := filepath.Join(dir, "htpasswd")
	users := map[string]string{puller: pullerPassword, pusher: pusherPassword, "alice": "alice-secret", "mallory": "mallory-secret"}
	if err := testenv.WriteHtpasswd(htpasswd, users); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "auth.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, authConfig, htpasswd), 0o644); err != nil {
		return "", fmt.Errorf("writing the auth config: %w", err)
	}
	return path, nil
}

// startOrigin starts a plain origin (no seeder) on its own storage; with
// auth it gets --auth-config.
func (e *cluster) startOrigin(ctx context.Context, name string, auth bool) (*testenv.Server, error) {
	dir := filepath.Join(e.dir, name)
	data := filepath.Join(dir, "storage")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", data, err)
	}
	var args []string
	if auth {
		path, err := writeAuthConfig(dir)
		if err != nil {
			return nil, err
		}
		args = []string{"--auth-config", path}
	}
	s, err := testenv.StartOrigin(ctx, testenv.OriginOptions{Binary: e.bins.origin, Storage: "file://" + data, Dir: dir, Args: args})
	if err != nil {
		return nil, err
	}
	e.keep(s.Process, data)
	return s, nil
}

// agentYAML keeps the agent's production defaults but for the authTTL
// under test and a short shutdown grace.
const agentYAML = `shutdownGrace: 5s
mirror:
  authTTL: %s
`

// startP2P starts a tracker, an origin with --auth-config and its seeder,
// and one agent in front of it.
func (e *cluster) startP2P(ctx context.Context) error {
	dir := filepath.Join(e.dir, "p2p")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	tr, err := testenv.StartTracker(ctx, testenv.TrackerOptions{Binary: e.bins.tracker, Dir: dir})
	if err != nil {
		return err
	}
	e.keep(tr.Process)
	e.tracker = tr
	authPath, err := writeAuthConfig(dir)
	if err != nil {
		return err
	}
	data := filepath.Join(dir, "storage")
	origin, err := testenv.StartSeedingOrigin(ctx, testenv.SeedingOriginOptions{
		Binary:   e.bins.origin,
		Storage:  "file://" + data,
		Name:     "origin-1",
		Trackers: []string{tr.GRPCAddr},
		Dir:      dir,
		Args:     []string{"--auth-config", authPath},
	})
	if err != nil {
		return err
	}
	e.keep(origin.Process, data, filepath.Join(dir, "seeder-cache"))
	e.origin = origin
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, agentYAML, e.c.authTTL), 0o644); err != nil {
		return fmt.Errorf("writing the agent config: %w", err)
	}
	cache := filepath.Join(dir, "agent-cache")
	agent, err := testenv.StartAgent(ctx, testenv.AgentOptions{
		Binary:   e.bins.agent,
		Origin:   origin.URL(),
		Seeders:  []string{origin.SeederAddr},
		Trackers: []string{tr.GRPCAddr},
		CacheDir: cache,
		Dir:      dir,
		Args:     []string{"--config", cfg},
	})
	if err != nil {
		return err
	}
	e.keep(agent.Process, cache)
	e.agent = agent
	return nil
}
