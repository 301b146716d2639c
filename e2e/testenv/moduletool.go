package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
)

// ModuleTool is a tool built from a Go module of its own inside the
// repository (a directory with its own go.mod and go.sum), for tools whose
// dependency tree Shoal's go.mod should not carry, such as kube-apiserver
// from the Kubernetes release module.
type ModuleTool struct {
	// Dir is the module directory, relative to the workspace root.
	Dir string
	// Package is the main package to build, e.g. k8s.io/kubernetes/cmd/kube-apiserver.
	Package string
	// Ldflags are passed to `go build -ldflags`.
	Ldflags string
}

// BuildModuleTool builds t into <Cache>/tools/<name>-<hash of go.mod, go.sum
// and flags>/ and returns the binary's path. A binary built from the same
// go.mod and go.sum is reused, so the (possibly long) build runs once per
// pinned version.
func (w *Workspace) BuildModuleTool(ctx context.Context, t ModuleTool) (string, error) {
	dir := filepath.Join(w.Root, t.Dir)
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return "", fmt.Errorf("building %s: %w", t.Package, err)
		}
		h.Write(b)
	}
	fmt.Fprintf(h, "%s\x00%s", t.Package, t.Ldflags)
	name := path.Base(t.Package)
	out := filepath.Join(w.Cache, "tools", name+"-"+hex.EncodeToString(h.Sum(nil))[:16])
	unlock, err := w.lock("tool-" + filepath.Base(out))
	if err != nil {
		return "", err
	}
	defer unlock()
	bin := filepath.Join(out, name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", fmt.Errorf("building %s: %w", t.Package, err)
	}
	// Build into a scratch directory and rename, so that an interrupted
	// build never leaves a binary that looks built.
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".build-")
	if err != nil {
		return "", fmt.Errorf("building %s: %w", t.Package, err)
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-trimpath", "-o", filepath.Join(tmp, name)}
	if t.Ldflags != "" {
		args = append(args, "-ldflags", t.Ldflags)
	}
	env := []string{"GOWORK=off", "GOFLAGS=-mod=readonly"}
	if err := runGo(ctx, dir, env, append(args, t.Package)...); err != nil {
		return "", fmt.Errorf("building %s in %s (needs the Go module proxy): %w", t.Package, t.Dir, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("building %s: %w", t.Package, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("building %s: %w", t.Package, err)
	}
	return bin, nil
}
