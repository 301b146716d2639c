// Package checkout finds the Shoal repository a test, a tool under hack/ or
// `shoalctl demo` runs in: the directory holding the go.mod of Shoal's
// module, at or above a given directory.
package checkout

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/modfile"
)

// Module is Shoal's Go module path.
const Module = "github.com/shoal-dev/shoal"

// Root returns dir or the nearest of its parents holding the go.mod of
// Module. A go.mod of another module (a project vendoring Shoal, a nested
// tool module) is passed over.
func Root(dir string) (string, error) {
	start := dir
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modfile.ModulePath(b) == Module {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not in a Shoal checkout: no go.mod of module %s in %s or its parents", Module, start)
		}
		dir = parent
	}
}

// FromWorkingDir is Root of the working directory: tests run in their
// package's directory and `go run` in the caller's, so both find it.
func FromWorkingDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the Shoal checkout: %w", err)
	}
	return Root(wd)
}
