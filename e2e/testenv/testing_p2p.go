package testenv

import (
	"os"
	"testing"
)

// Tracker builds and starts a tracker and stops it when the test ends.
func Tracker(t testing.TB, args ...string) *TrackerServer {
	t.Helper()
	bin := Binary(t, "tracker")
	tr, err := StartTracker(t.Context(), TrackerOptions{Binary: bin, Dir: t.TempDir(), Args: args})
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, tr.Process, true)
	return tr
}

// Agent starts a peer-agent (opts.Binary defaults to a build of
// cmd/peer-agent, opts.Dir to a TempDir) and stops it when the test ends.
func Agent(t testing.TB, opts AgentOptions) *AgentServer {
	t.Helper()
	if opts.Binary == "" {
		opts.Binary = Binary(t, "peer-agent")
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	a, err := StartAgent(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, a.Process, true)
	return a
}

// SeedingOrigin starts an origin node with its seeder on (opts.Binary
// defaults to a build of cmd/origin, opts.Dir to a TempDir) and stops it
// when the test ends.
func SeedingOrigin(t testing.TB, opts SeedingOriginOptions) *SeedingOriginServer {
	t.Helper()
	if opts.Binary == "" {
		opts.Binary = Binary(t, "origin")
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	o, err := StartSeedingOrigin(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, o.Process, true)
	return o
}

// Dockerd starts a dockerd with its own containerd in a fresh directory
// (opts.Dir is ignored), reporting Unavailable when Debian's docker.io is
// not installed or the test does not run as root, and stops both and
// removes the directory when the test ends.
func Dockerd(t testing.TB, opts DockerdOptions) *DockerDaemon {
	t.Helper()
	if err := DockerdAvailable(); err != nil {
		Unavailable(t, "%v", err)
	}
	dir, err := DockerdDir()
	if err != nil {
		t.Fatal(err)
	}
	opts.Dir = dir
	d, err := StartDockerd(t.Context(), opts)
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(DefaultStopTimeout); err != nil {
			t.Errorf("stopping dockerd: %v", err)
		}
		if t.Failed() {
			t.Log(d.LogTail(40))
			t.Log(d.Containerd.LogTail(20))
		}
		if err := d.Remove(); err != nil {
			t.Logf("removing %s: %v", d.Dir, err)
		}
	})
	return d
}

// Containerd starts a standalone containerd in a fresh short directory,
// reporting Unavailable when it is not installed or the test does not run
// as root, and stops it when the test ends.
func Containerd(t testing.TB) *ContainerdDaemon {
	t.Helper()
	if err := DockerdAvailable(); err != nil {
		Unavailable(t, "%v", err)
	}
	dir, err := os.MkdirTemp("", "shoal-containerd-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := StartContainerd(t.Context(), ContainerdOptions{Dir: dir})
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(DefaultStopTimeout); err != nil {
			t.Errorf("stopping containerd: %v", err)
		}
		if t.Failed() {
			t.Log(c.LogTail(40))
		}
		unmountUnder(dir)
		_ = os.RemoveAll(dir)
	})
	return c
}
