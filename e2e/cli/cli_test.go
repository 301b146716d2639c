// Package cli checks what a person meets first on each daemon's command
// line: --help and --version answer and exit 0, a wrong flag says where the
// flags are listed. The binaries are built here with -ldflags stamping a
// version, as a release build would.
package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// daemons are the commands checked here; shoalctl has its own tests.
var daemons = []string{"origin", "tracker", "peer-agent"}

const (
	stampVersion = "v9.9.9-clitest"
	stampCommit  = "0123456789abcdef0123456789abcdef01234567"
)

// binDir is where TestMain built the daemons.
var binDir string

// TestMain builds the daemons once, into a directory every user may read
// (one test runs them as nobody), with the version and commit set by the
// linker.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shoal-cli-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err == nil {
		err = build(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func build(dir string) error {
	ws, err := testenv.FindWorkspace()
	if err != nil {
		return err
	}
	const pkg = "github.com/shoal-dev/shoal/internal/daemon"
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
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
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
	for _, name := range daemons {
		bin := filepath.Join(binDir, name)
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

// daemon is a running daemon whose stderr lines are read as they come.
type daemon struct {
	cmd   *exec.Cmd
	lines chan string
	log   strings.Builder // every line read, for failure messages
	done  chan error
}

func start(t *testing.T, bin string, cred *syscall.Credential, env []string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", filepath.Base(bin), err)
	}
	d := &daemon{cmd: cmd, lines: make(chan string, 1024), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		close(d.lines)
		d.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-d.done
	})
	return d
}

// waitLine returns the first line containing s, failing if the daemon
// exits or a minute passes first.
func (d *daemon) waitLine(t *testing.T, s string) string {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case line, ok := <-d.lines:
			if !ok {
				t.Fatalf("%s exited before logging %q:\n%s", filepath.Base(d.cmd.Path), s, d.log.String())
			}
			d.log.WriteString(line + "\n")
			if strings.Contains(line, s) {
				return line
			}
		case <-timeout:
			t.Fatalf("%s did not log %q within a minute:\n%s", filepath.Base(d.cmd.Path), s, d.log.String())
		}
	}
}

// exit reads the rest of the output and returns the exit status.
func (d *daemon) exit(t *testing.T) int {
	t.Helper()
	for line := range d.lines {
		d.log.WriteString(line + "\n")
	}
	err := <-d.done
	d.done <- err // for the cleanup
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// TestDefaultDirectoriesArePerUserWhenNotRoot: the quick start run by a
// normal user (nobody, when the test runs as root) keeps its data under
// the user's home, says so, and needs no flag for it.
func TestDefaultDirectoriesArePerUserWhenNotRoot(t *testing.T) {
	home := t.TempDir()
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		const nobody = 65534
		cred = &syscall.Credential{Uid: nobody, Gid: nobody}
		// nobody must reach its home through the test's 0700 temporary
		// directory, and own it.
		if err := os.Chmod(filepath.Dir(home), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(home, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
	origin := start(t, filepath.Join(binDir, "origin"), cred, env, "--listen", "127.0.0.1:0")
	data := filepath.Join(home, ".local", "share", "shoal")
	line := origin.waitLine(t, "origin serving")
	if !strings.Contains(line, "storage=file://"+data+" ") {
		t.Errorf("the origin's start line does not say its data goes to %s:\n%s", data, line)
	}
	if _, err := os.Stat(data); err != nil {
		t.Errorf("the origin's default data directory: %v", err)
	}
	if err := origin.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if status := origin.exit(t); status != 0 {
		t.Errorf("origin exited %d after SIGTERM:\n%s", status, origin.log.String())
	}

	agent := start(t, filepath.Join(binDir, "peer-agent"), cred, env, "--origin", "http://127.0.0.1:1",
		"--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0")
	cache := filepath.Join(home, ".cache", "shoal", "agent")
	line = agent.waitLine(t, "piece store")
	if !strings.Contains(line, "dir="+cache+" ") {
		t.Errorf("the agent's start does not say its cache is %s:\n%s", cache, line)
	}
	agent.waitLine(t, "peer-agent serving")
}

// TestTwoAgentsOnOneCacheDirectory: the second agent refuses to start,
// naming the first's process id, and starts once the first has stopped.
func TestTwoAgentsOnOneCacheDirectory(t *testing.T) {
	agent := filepath.Join(binDir, "peer-agent")
	cache := t.TempDir()
	args := []string{"--origin", "http://127.0.0.1:1", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--cache-dir", cache}
	first := start(t, agent, nil, os.Environ(), args...)
	first.waitLine(t, "peer-agent serving")

	second := start(t, agent, nil, os.Environ(), args...)
	if status := second.exit(t); status != 1 {
		t.Fatalf("second agent on %s: exit status %d, want 1:\n%s", cache, status, second.log.String())
	}
	want := fmt.Sprintf("peer-agent: cache directory: %s is in use by process %d", cache, first.cmd.Process.Pid)
	if !strings.Contains(second.log.String(), want) || !strings.Contains(second.log.String(), "--cache-dir") {
		t.Errorf("second agent's error does not say %q and how to fix it:\n%s", want, second.log.String())
	}

	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if status := first.exit(t); status != 0 {
		t.Fatalf("first agent exited %d after SIGTERM:\n%s", status, first.log.String())
	}
	third := start(t, agent, nil, os.Environ(), args...)
	third.waitLine(t, "peer-agent serving")
}
