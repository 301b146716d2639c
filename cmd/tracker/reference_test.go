package main

import (
	"testing"

	"github.com/shoal-dev/shoal/internal/configdoc"
)

//go:generate go test -run ^TestConfigReference$ . -args -update-config-reference

// TestConfigReference holds docs/config-reference.md's tracker section equal
// to the config struct: its keys, types, defaults (root's directories) and
// doc comments.
func TestConfigReference(t *testing.T) {
	configdoc.Check(t, "tracker", DefaultConfig(), configdoc.Options{})
}
