package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// PatchedTool is an external tool built from a module version on the Go
// module proxy with patches kept in this repository applied to its source,
// for a tool whose release cannot do what the tests need (docs/storage.md
// says which and why).
type PatchedTool struct {
	// Module and Version name the module, e.g.
	// github.com/fsouza/fake-gcs-server and v1.56.1.
	Module, Version string
	// Package is the main package inside the module, relative to its root
	// ("." for the root).
	Package string
	// Patches are unified diffs (`git apply -p1`) relative to the
	// module's root, named relative to the workspace root.
	Patches []string
}

// BuildPatchedTool downloads t's module (`go mod download`), applies its
// patches to a copy of the source and builds it into
// <Cache>/tools/<module>_<version>-patched-<hash of the patches>/, so that
// the patched binary never shares a cache entry with the released one or
// with other patches. A binary already built from the same patches is
// reused.
func (w *Workspace) BuildPatchedTool(ctx context.Context, t PatchedTool) (string, error) {
	name := path.Base(t.Module)
	what := t.Module + "@" + t.Version + " (patched)"
	h := sha256.New()
	for _, p := range t.Patches {
		b, err := os.ReadFile(filepath.Join(w.Root, p))
		if err != nil {
			return "", fmt.Errorf("building %s: %w", what, err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "%s\x00", t.Package)
	dir := filepath.Join(w.Cache, "tools", strings.NewReplacer("/", "_", "@", "_").Replace(t.Module+"@"+t.Version)+
		"-patched-"+hex.EncodeToString(h.Sum(nil))[:16])
	unlock, err := w.lock("tool-" + filepath.Base(dir))
	if err != nil {
		return "", err
	}
	defer unlock()
	bin := filepath.Join(dir, name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	// The source is copied outside the workspace, where no enclosing git
	// repository can make `git apply` skip paths it takes for outside
	// its working directory.
	work, err := os.MkdirTemp("", "shoal-patched-"+name+"-")
	if err != nil {
		return "", fmt.Errorf("building %s: %w", what, err)
	}
	defer os.RemoveAll(work)
	src := filepath.Join(work, "src")
	if err := copyModuleSource(ctx, work, t.Module+"@"+t.Version, src); err != nil {
		return "", fmt.Errorf("building %s (needs the Go module proxy): %w", what, err)
	}
	for _, p := range t.Patches {
		cmd := exec.CommandContext(ctx, "git", "apply", "-p1", filepath.Join(w.Root, p))
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GIT_CEILING_DIRECTORIES="+work)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building %s: applying %s: %w\n%s", what, p, err, strings.TrimSpace(string(out)))
		}
	}
	// Build into a scratch directory and rename, so that an interrupted
	// build never leaves a binary that looks built.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("building %s: %w", what, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return "", fmt.Errorf("building %s: %w", what, err)
	}
	defer os.RemoveAll(tmp)
	env := []string{"GOWORK=off", "GOFLAGS=-mod=readonly"}
	pkg := "./" + strings.TrimPrefix(path.Clean(t.Package), "./")
	if err := runGo(ctx, src, env, "build", "-trimpath", "-o", filepath.Join(tmp, name), pkg); err != nil {
		return "", fmt.Errorf("building %s (needs the Go module proxy): %w", what, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("building %s: %w", what, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("building %s: %w", what, err)
	}
	return bin, nil
}

// copyModuleSource downloads module@version into the module cache and
// copies its source to dst, writable (the cache's copy is read-only).
func copyModuleSource(ctx context.Context, dir, moduleVersion, dst string) error {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", moduleVersion)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go mod download %s: %w\n%s%s", moduleVersion, err, strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
		return fmt.Errorf("go mod download %s: %w", moduleVersion, err)
	}
	if m.Error != "" || m.Dir == "" {
		return fmt.Errorf("go mod download %s: no source directory: %s", moduleVersion, m.Error)
	}
	return os.CopyFS(dst, os.DirFS(m.Dir))
}
