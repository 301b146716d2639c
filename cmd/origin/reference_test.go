package main

import (
	"flag"
	"testing"

	"github.com/shoal-dev/shoal/internal/configdoc"
	"github.com/shoal-dev/shoal/pkg/daemon"
)

//go:generate go test -run ^TestConfigReference$ . -args -update-config-reference

var updateReference = flag.Bool("update-config-reference", false, "rewrite origin's section of docs/config-reference.md instead of comparing (go generate ./cmd/origin)")

// TestConfigReference holds docs/config-reference.md's origin section equal
// to the config struct: its keys, types, defaults (root's directories) and
// doc comments.
func TestConfigReference(t *testing.T) {
	configdoc.Check(t, "origin", defaultConfig(daemon.Dirs{System: true}), configdoc.Options{Defaults: map[string]string{"seeder.cluster.nodeName": "the host name"}}, *updateReference)
}
