package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// BuildOptions tunes Build.
type BuildOptions struct {
	// Race builds with the race detector. The binary then exits with
	// status 66 after a data race, which Stop reports.
	Race bool
}

// Commands lists the names of the cmd/ directories that hold a main
// package, skipping those not written yet.
func (w *Workspace) Commands() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(w.Root, "cmd"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // git keeps no empty directories
	}
	if err != nil {
		return nil, fmt.Errorf("listing commands: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		ok, err := w.hasMain(e.Name())
		if err != nil {
			return nil, err
		}
		if ok {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

func (w *Workspace) hasMain(name string) (bool, error) {
	dir := filepath.Join(w.Root, "cmd", name)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	pkg, err := build.ImportDir(dir, 0)
	var noGo *build.NoGoError
	switch {
	case errors.As(err, &noGo):
		return false, nil
	case err != nil:
		// A half-written package (e.g. mixed package clauses) is reported
		// by the compiler with a better message; let Build run it.
		return true, nil
	}
	return pkg.Name == "main", nil
}

// Build compiles ./cmd/<name> into <Cache>/bin and returns the binary's
// path. It returns an error wrapping ErrNoMain when cmd/<name> has no main
// package yet. Go's build cache makes a rebuild of unchanged code cheap.
func (w *Workspace) Build(ctx context.Context, name string, opts BuildOptions) (string, error) {
	ok, err := w.hasMain(name)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("building cmd/%s: %w in %s", name, ErrNoMain, filepath.Join(w.Root, "cmd", name))
	}
	binDir := filepath.Join(w.Cache, "bin")
	out := filepath.Join(binDir, name)
	args := []string{"build", "-o", out}
	if opts.Race {
		out += "-race"
		args = []string{"build", "-race", "-o", out}
	}
	args = append(args, "./cmd/"+name)
	unlock, err := w.lock(filepath.Base(out))
	if err != nil {
		return "", err
	}
	defer unlock()
	// `go build -o` on an unchanged package leaves the existing file alone,
	// so building straight to the final path (under the lock) is both
	// atomic enough and avoids relinking.
	if err := runGo(ctx, w.Root, nil, args...); err != nil {
		return "", fmt.Errorf("building cmd/%s: %w", name, err)
	}
	return out, nil
}

// Install builds an external tool given as "module/path/cmd@version" with
// `go install` into its own directory under <Cache>/tools and returns the
// binary's path. A tool already installed at that version is reused.
func (w *Workspace) Install(ctx context.Context, tool string) (string, error) {
	pkg, version, ok := strings.Cut(tool, "@")
	if !ok || version == "" {
		return "", fmt.Errorf("installing %s: want package@version", tool)
	}
	dir := filepath.Join(w.Cache, "tools", strings.NewReplacer("/", "_", "@", "_").Replace(tool))
	unlock, err := w.lock("tool-" + filepath.Base(dir))
	if err != nil {
		return "", err
	}
	defer unlock()
	if bin, err := onlyFile(dir); err == nil {
		return bin, nil
	}
	// Install into a scratch directory and rename, so that an interrupted
	// install never leaves a truncated binary that looks installed.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("installing %s: %w", tool, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".install-")
	if err != nil {
		return "", fmt.Errorf("installing %s: %w", tool, err)
	}
	defer os.RemoveAll(tmp)
	env := []string{"GOBIN=" + tmp, "GOWORK=off"}
	if err := runGo(ctx, filepath.Dir(dir), env, "install", pkg+"@"+version); err != nil {
		return "", fmt.Errorf("installing %s (needs the Go module proxy): %w", tool, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("installing %s: %w", tool, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("installing %s: %w", tool, err)
	}
	return onlyFile(dir)
}

// onlyFile returns the single file in dir: `go install` names the binary
// after the package's last path element (minus a /vN suffix), which is not
// worth re-deriving here.
func onlyFile(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	if len(entries) != 1 || entries[0].IsDir() {
		return "", fmt.Errorf("%s: want exactly one binary, found %d entries", dir, len(entries))
	}
	return filepath.Join(dir, entries[0].Name()), nil
}

func runGo(ctx context.Context, dir string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	// A test binary that times out mid-build takes the build with it,
	// instead of leaving it compiling (kube-apiserver: minutes of CPU).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// lock takes an exclusive file lock named name in the cache, so that test
// packages running in parallel do not build or install the same thing at
// once. The returned function releases it.
func (w *Workspace) lock(name string) (func(), error) {
	dir := filepath.Join(w.Cache, "locks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating lock directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", name, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
