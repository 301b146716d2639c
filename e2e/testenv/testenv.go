// Package testenv builds Shoal's binaries and the external tools the
// end-to-end tests run against (the reference registry, crane, the OCI
// conformance suite), and starts and stops them as separate processes.
//
// Every function has a plain (…, error) form so that programs such as the
// benchmark in e2e/bench can use it, and tests use the thin testing.TB
// wrappers (Binary, Tool, Origin, Registry, Unavailable), which fail or skip
// as the CI rules require and stop every process in t.Cleanup.
//
// Binaries and tools are cached under the repository's .cache/e2e directory,
// so a second run only relinks what changed. Concurrent test packages share
// that cache safely: every build or install holds a file lock.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shoal-dev/shoal/internal/checkout"
)

// Module is the Go module path of the repository the workspace must be.
const Module = checkout.Module

// Pinned external tools, as `go install` arguments. They are built from the
// Go module proxy rather than downloaded as release binaries, so the machine
// needs nothing but a Go toolchain.
const (
	// ReferenceRegistry is registry:2 (CNCF distribution), the registry
	// whose on-storage layout and behaviour Shoal's origin follows.
	ReferenceRegistry = "github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
	// Crane is go-containerregistry's command-line client.
	Crane = "github.com/google/go-containerregistry/cmd/crane@v0.22.1"
	// ConformanceSuite is the OCI distribution-spec conformance program.
	// The module has no release tags on the proxy; this pseudo-version is
	// the newest it serves (2026-08-31).
	ConformanceSuite = "github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111"
)

// ErrNoMain reports that cmd/<name> has no main package yet, which is a
// missing dependency (the binary has not been written) rather than a build
// failure.
var ErrNoMain = errors.New("no main package")

// Workspace is a checkout of the Shoal repository.
type Workspace struct {
	// Root is the directory holding go.mod.
	Root string
	// Cache is where binaries, tools and lock files are kept
	// (<Root>/.cache/e2e, ignored by git).
	Cache string
}

// FindWorkspace finds the repository containing the working directory by
// walking up to the go.mod of module Module. Tests run in their package's
// directory and `go run ./e2e/...` in the root, so both find it.
func FindWorkspace() (*Workspace, error) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("finding the Shoal workspace: %w", err)
	}
	return WorkspaceAt(dir)
}

// WorkspaceAt finds the repository containing dir.
func WorkspaceAt(dir string) (*Workspace, error) {
	root, err := checkout.Root(dir)
	if err != nil {
		return nil, fmt.Errorf("finding the Shoal workspace: %w", err)
	}
	return &Workspace{Root: root, Cache: filepath.Join(root, ".cache", "e2e")}, nil
}
