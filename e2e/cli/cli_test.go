// Package cli checks what a person meets first on each daemon's command
// line: --help and --version answer and exit 0, a wrong flag says where the
// flags are listed. The binaries are built here with -ldflags stamping a
// version, as a release build would.
package cli

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

var daemons = []string{"origin", "tracker", "peer-agent"}

const (
	stampVersion = "v9.9.9-clitest"
	stampCommit  = "0123456789abcdef0123456789abcdef01234567"
)

// build compiles the daemons into a temporary directory with the version
// and commit set by the linker.
func build(t *testing.T) string {
	t.Helper()
	ws, err := testenv.FindWorkspace()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const pkg = "github.com/shoal-dev/shoal/pkg/daemon"
	args := []string{"build", "-o", dir + "/",
		"-ldflags", "-X " + pkg + ".version=" + stampVersion + " -X " + pkg + ".commit=" + stampCommit}
	for _, d := range daemons {
		args = append(args, "./cmd/"+d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = ws.Root
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

// run runs a daemon that is expected to answer and exit, not to serve.
func run(t *testing.T, bin string, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		status = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %q: %v", filepath.Base(bin), args, err)
	}
	return o.String(), e.String(), status
}

func TestDaemonsAnswerHelpVersionAndBadFlags(t *testing.T) {
	dir := build(t)
	for _, name := range daemons {
		bin := filepath.Join(dir, name)
		t.Run(name, func(t *testing.T) {
			for _, help := range []string{"--help", "-h"} {
				out, errOut, status := run(t, bin, help)
				if status != 0 {
					t.Errorf("%s %s: exit status %d, want 0; stderr: %s", name, help, status, errOut)
				}
				for _, want := range []string{"Usage: " + name + " [flags]", "-config", "-log-level", "-version", "docs/config-reference.md"} {
					if !strings.Contains(out, want) {
						t.Errorf("%s %s: stdout lacks %q:\n%s", name, help, want, out)
					}
				}
			}

			out, errOut, status := run(t, bin, "--version")
			want := name + " " + stampVersion + " (commit " + stampCommit[:12] + ") "
			if status != 0 || !strings.HasPrefix(out, want) {
				t.Errorf("%s --version: status %d, stdout %q (stderr %q); want 0 and a line starting %q", name, status, out, errOut, want)
			}

			out, errOut, status = run(t, bin, "--no-such-flag")
			if status != 1 || out != "" || !strings.Contains(errOut, name+": flag provided but not defined: -no-such-flag ("+name+" --help lists the flags)") {
				t.Errorf("%s --no-such-flag: status %d, stdout %q, stderr %q; want 1 and one line naming the flag and --help", name, status, out, errOut)
			}
		})
	}
}
