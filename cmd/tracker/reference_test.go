package main

import (
	"flag"
	"testing"

	"github.com/shoal-dev/shoal/internal/configdoc"
)

//go:generate go test -run ^TestConfigReference$ . -args -update-config-reference

var updateReference = flag.Bool("update-config-reference", false, "rewrite tracker's section of docs/config-reference.md instead of comparing (go generate ./cmd/tracker)")

// TestConfigReference holds docs/config-reference.md's tracker section equal
// to the config struct: its keys, types, defaults (root's directories) and
// doc comments.
func TestConfigReference(t *testing.T) {
	configdoc.Check(t, "tracker", DefaultConfig(), configdoc.Options{}, *updateReference)
}
