package main

import (
	"testing"

	"github.com/shoal-dev/shoal/internal/configdoc"
	"github.com/shoal-dev/shoal/internal/daemon"
)

//go:generate go test -run ^TestConfigReference$ . -args -update-config-reference

// TestConfigReference holds docs/config-reference.md's peer-agent section equal
// to the config struct: its keys, types, defaults (root's directories) and
// doc comments.
func TestConfigReference(t *testing.T) {
	configdoc.Check(t, "peer-agent", defaultConfig(daemon.Dirs{System: true}), configdoc.Options{})
}
