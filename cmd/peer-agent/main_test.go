package main

import (
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/daemon"
)

func TestDeployConfigParses(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "peer-agent.yaml")
	cfg, err := parseConfig([]string{"--config", path})
	if err != nil {
		t.Fatalf("deploy/peer-agent.yaml: %v", err)
	}
	if cfg.CacheQuota != 20<<30 || cfg.Swarm.PieceTimeout != 20*time.Second || len(cfg.Tracker.Trackers) != 2 {
		t.Errorf("deploy/peer-agent.yaml read as quota %d, piece timeout %s, trackers %v", cfg.CacheQuota, cfg.Swarm.PieceTimeout, cfg.Tracker.Trackers)
	}
}

func TestFlagsOverrideTheFile(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "peer-agent.yaml")
	cfg, err := parseConfig([]string{"--config", path, "--origin", "http://127.0.0.1:5000",
		"--origin-seeders", "a:1, b:2", "--tracker", "t:1", "--cache-quota", "1.5GiB", "--egress-limit", "100MB",
		"--origin-key", "/etc/shoal/origin.pub", "--origin-key", "/etc/shoal/origin-next.pub"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Origin != "http://127.0.0.1:5000" || !slices.Equal(cfg.OriginSeeders, []string{"a:1", "b:2"}) ||
		!slices.Equal(cfg.Tracker.Trackers, []string{"t:1"}) || cfg.CacheQuota != 3<<29 || cfg.EgressLimit != 100e6 ||
		!slices.Equal(cfg.Swarm.OriginKeys, []string{"/etc/shoal/origin.pub", "/etc/shoal/origin-next.pub"}) {
		t.Errorf("flags not applied: %+v", cfg)
	}
}

func TestOriginIsRequired(t *testing.T) {
	if _, err := parseConfig(nil); err == nil {
		t.Fatal("no origin: want an error")
	}
}

// TestDeployedConfigIsTheDefault keeps deploy/peer-agent.yaml, which
// shows every key with its default, true to the code: loaded, it equals
// the defaults (root's cache directory) but for the keys it marks as
// examples.
func TestDeployedConfigIsTheDefault(t *testing.T) {
	def := defaultConfig(daemon.Dirs{System: true})
	cfg := def
	if err := loadConfig("../../deploy/peer-agent.yaml", &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The keys marked "# example": origin has no default, and trackers
	// are the site's.
	cfg.Origin, cfg.Tracker.Trackers = def.Origin, def.Tracker.Trackers
	// Printed, an empty list in the file and a nil one in the code agree.
	if fmt.Sprintf("%+v", cfg) != fmt.Sprintf("%+v", def) {
		t.Errorf("deploy/peer-agent.yaml differs from the defaults:\n file: %+v\n code: %+v", cfg, def)
	}
}
