package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/daemon"
)

// TestDeployedConfigIsTheDefault keeps deploy/origin.yaml, which documents
// every key with its default, true to the code: it must load without
// unknown keys and equal DefaultConfig.
func TestDeployedConfigIsTheDefault(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.load("../../deploy/origin.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	if err := def.validate(); err != nil {
		t.Fatal(err)
	}
	// A default the file can only describe: the node name is the host's.
	if cfg.Seeder.Cluster.NodeName == "" {
		cfg.Seeder.Cluster.NodeName = def.Seeder.Cluster.NodeName
	}
	// The file shows root's directories; anyone else's default is the
	// per-user equivalent.
	dirs := daemon.DefaultDirs()
	if want := "file://" + dirs.Data(strings.TrimPrefix(cfg.Storage, "file://"), ""); def.Storage != want {
		t.Errorf("default storage %s, want %s (deploy/origin.yaml's %s for this user)", def.Storage, want, cfg.Storage)
	}
	if want := dirs.Cache(cfg.Seeder.CacheDir, "origin"); def.Seeder.CacheDir != want {
		t.Errorf("default seeder.cacheDir %s, want %s (deploy/origin.yaml's %s for this user)", def.Seeder.CacheDir, want, cfg.Seeder.CacheDir)
	}
	cfg.Storage, cfg.Seeder.CacheDir = def.Storage, def.Seeder.CacheDir
	// Printed, an empty list in the file and a nil one in the code agree.
	if fmt.Sprintf("%+v", cfg) != fmt.Sprintf("%+v", def) {
		t.Errorf("deploy/origin.yaml differs from DefaultConfig:\n file: %+v\n code: %+v", cfg, def)
	}
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/bad.yaml"
	if err := writeFile(p, "registry:\n  allowSparse: true\n"); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if err := cfg.load(p); err == nil {
		t.Fatal("a misspelt key was accepted silently")
	}
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }
