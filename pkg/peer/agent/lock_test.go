package agent

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/daemon"
)

// TestSecondAgentOnACacheDirFails: Listen claims the cache directory, so a
// second agent on it fails at once with an error that names the directory,
// the process holding it and what to do, whoever embeds the agent; once
// the first has stopped, the directory is free again.
func TestSecondAgentOnACacheDirFails(t *testing.T) {
	o := startOrigin(t)
	cfg := testConfig(t, o.URL, nil, nil)
	first := startAgent(t, cfg)

	second, err := Listen(cfg, testLogger(t))
	if err == nil {
		second.closeListeners()
		_ = second.unlock()
		t.Fatalf("a second agent on the cache directory %s started; want it refused while the first runs", cfg.CacheDir)
	}
	var inUse *daemon.DirInUseError
	if !errors.As(err, &inUse) || inUse.Dir != cfg.CacheDir {
		t.Errorf("second agent's error %v (%T), want a *daemon.DirInUseError for %s", err, err, cfg.CacheDir)
	}
	for _, want := range []string{cfg.CacheDir, "process " + strconv.Itoa(os.Getpid()), "another peer-agent", "cacheDir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second agent's error %q does not say %q", err, want)
		}
	}

	first.shutdown()
	// startAgent fails the test if Listen does.
	startAgent(t, cfg)
}
