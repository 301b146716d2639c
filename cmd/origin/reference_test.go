package main

import (
	"testing"

	"github.com/shoal-dev/shoal/internal/configdoc"
	"github.com/shoal-dev/shoal/internal/daemon"
)

//go:generate go test -run ^TestConfigReference$ . -args -update-config-reference

// TestConfigReference holds docs/config-reference.md's origin section equal
// to the config struct: its keys, types, defaults (root's directories) and
// doc comments.
func TestConfigReference(t *testing.T) {
	configdoc.Check(t, "origin", defaultConfig(daemon.Dirs{System: true}), configdoc.Options{Defaults: map[string]string{"seeder.cluster.nodeName": "the host name"}})
}
