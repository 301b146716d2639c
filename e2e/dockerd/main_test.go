// Package dockerd_test pulls images through a peer-agent with real
// clients: Debian's dockerd (registry-mirrors pointing at the agent, and by
// the agent's own address) and containerd's ctr (a hosts.toml pointing at
// the agent). Images are pushed with `docker push` to an origin whose
// seeder is on, so blobs reach the agent through its P2P engine.
//
// One origin, tracker and agent, a dockerd that pushes and a dockerd that
// pulls are shared by the package's tests (started by the first test that
// needs them, stopped by TestMain); every test uses its own repository and
// random layers, so nothing a test pulls was cached by another. A second
// origin runs with access control on (authConfig), with its own agent in
// front of it, for the clients' logins, token dances and credentials.
package dockerd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// env is the shared setup.
type env struct {
	dir     string
	tracker *testenv.TrackerServer
	origin  *testenv.SeedingOriginServer
	agent   *testenv.AgentServer
	// authOrigin serves with authConfig; authAgent is an agent in front
	// of it. Both dockerds list both as insecure registries.
	authOrigin *testenv.SeedingOriginServer
	authAgent  *testenv.AgentServer
	// pusher pushes to the origin; puller has the agent as its mirror and
	// pulls only.
	pusher, puller *testenv.DockerDaemon
	// procs are the Shoal servers in start order.
	procs []*testenv.Process
}

var shared testenv.Shared[*env]

func TestMain(m *testing.M) { os.Exit(shared.Main(m, "e2e/dockerd", (*env).stop)) }

// setup returns the shared setup, starting it on first use. A missing
// dockerd is Unavailable (skipped outside CI); anything else that fails to
// start fails every test that needs it.
func setup(t *testing.T) *env {
	t.Helper()
	if err := testenv.DockerdAvailable(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	origin := testenv.Binary(t, "origin")
	tracker := testenv.Binary(t, "tracker")
	agent := testenv.Binary(t, "peer-agent")
	return shared.Get(t, "the shared origins, tracker, agents and dockerds", func() (*env, error) {
		return start(origin, tracker, agent)
	})
}

func start(originBin, trackerBin, agentBin string) (e *env, err error) {
	// Not the test's context: the setup outlives the first test.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "shoal-e2e-dockerd-")
	if err != nil {
		return nil, err
	}
	e = &env{dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.stop())
		}
	}()
	sub := func(name string) string {
		p := filepath.Join(dir, name)
		if mkErr := os.MkdirAll(p, 0o755); mkErr != nil && err == nil {
			err = mkErr
		}
		return p
	}
	if e.tracker, err = testenv.StartTracker(ctx, testenv.TrackerOptions{Binary: trackerBin, Dir: sub("tracker")}); err != nil {
		return e, err
	}
	e.procs = append(e.procs, e.tracker.Process)
	if e.origin, err = testenv.StartSeedingOrigin(ctx, testenv.SeedingOriginOptions{
		Binary:   originBin,
		Storage:  "file://" + sub("storage"),
		Name:     "origin-1",
		Trackers: []string{e.tracker.GRPCAddr},
		Dir:      sub("origin"),
	}); err != nil {
		return e, err
	}
	e.procs = append(e.procs, e.origin.Process)
	if e.agent, err = testenv.StartAgent(ctx, testenv.AgentOptions{
		Binary:   agentBin,
		Origin:   e.origin.URL(),
		Seeders:  []string{e.origin.SeederAddr},
		Trackers: []string{e.tracker.GRPCAddr},
		Dir:      sub("agent"),
	}); err != nil {
		return e, err
	}
	e.procs = append(e.procs, e.agent.Process)
	authConfig, err := writeAuthConfig(sub("auth"))
	if err != nil {
		return e, err
	}
	if e.authOrigin, err = testenv.StartSeedingOrigin(ctx, testenv.SeedingOriginOptions{
		Binary:   originBin,
		Storage:  "file://" + sub("auth-storage"),
		Name:     "origin-auth",
		Trackers: []string{e.tracker.GRPCAddr},
		Dir:      sub("auth-origin"),
		Args:     []string{"--auth-config", authConfig},
	}); err != nil {
		return e, err
	}
	e.procs = append(e.procs, e.authOrigin.Process)
	if e.authAgent, err = testenv.StartAgent(ctx, testenv.AgentOptions{
		Binary:   agentBin,
		Name:     "auth",
		Origin:   e.authOrigin.URL(),
		Seeders:  []string{e.authOrigin.SeederAddr},
		Trackers: []string{e.tracker.GRPCAddr},
		Dir:      sub("auth-agent"),
	}); err != nil {
		return e, err
	}
	e.procs = append(e.procs, e.authAgent.Process)
	insecure := []string{e.authOrigin.Addr, e.authAgent.Addr}
	pusherDir, err := testenv.DockerdDir()
	if err != nil {
		return e, err
	}
	if e.pusher, err = testenv.StartDockerd(ctx, testenv.DockerdOptions{
		Dir:                pusherDir,
		InsecureRegistries: append([]string{e.origin.Addr}, insecure...),
	}); err != nil {
		_ = os.RemoveAll(pusherDir)
		return e, err
	}
	pullerDir, err := testenv.DockerdDir()
	if err != nil {
		return e, err
	}
	if e.puller, err = testenv.StartDockerd(ctx, testenv.DockerdOptions{
		Dir:                pullerDir,
		Mirrors:            []string{e.agent.URL()},
		InsecureRegistries: append([]string{e.agent.Addr}, insecure...),
	}); err != nil {
		_ = os.RemoveAll(pullerDir)
		return e, err
	}
	return e, nil
}

// stop stops everything started, dockerds first (they hold connections to
// the agent), and removes the directories unless KEEP_E2E_DIR is set.
func (e *env) stop() error {
	var errs []error
	for _, d := range []*testenv.DockerDaemon{e.puller, e.pusher} {
		if d == nil {
			continue
		}
		if err := d.Stop(testenv.DefaultStopTimeout); err != nil {
			errs = append(errs, err)
		}
		if !testenv.Kept() {
			_ = d.Remove()
		}
	}
	errs = append(errs, testenv.StopAll(e.procs))
	testenv.RemoveDir("e2e/dockerd", e.dir)
	return errors.Join(errs...)
}
