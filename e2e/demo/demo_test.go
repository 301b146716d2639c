// Package demo_test runs `shoalctl demo` as a newcomer would, from the
// checkout (it builds origin, tracker and peer-agent itself), and checks
// what it promises: every agent pulls the image, the origin sends about
// one copy of it, and every process it started is gone when it ends, also
// after a Ctrl-C.
package demo_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// demoTimeout bounds a whole demo run, the build of three binaries
// included (a relink when the test cache is warm, minutes when cold).
const demoTimeout = 10 * time.Minute

var (
	pidRe    = regexp.MustCompile(`\bpid (\d+)\b`)
	dirRe    = regexp.MustCompile(`working directory (\S+)\)`)
	egressRe = regexp.MustCompile(`origin egress: [0-9.]+ MiB = ([0-9.]+) copies of the image \(direct pulls from the origin: [0-9.]+ MiB = (\d+) copies\)`)
)

// demoCommand is `shoalctl demo args...` run in the checkout's root, with
// its temporary directory under the test's.
func demoCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	w := testenv.ForTest(t)
	cmd := exec.CommandContext(t.Context(), testenv.Binary(t, "shoalctl"), append([]string{"demo"}, args...)...)
	cmd.Dir = w.Root
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

func TestDemoPullsThroughEveryAgentAndTheOriginSendsAboutOneCopy(t *testing.T) {
	cmd := demoCommand(t, "--agents", "4", "--size", "64MiB", "--layers", "2")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	timer := time.AfterFunc(demoTimeout, func() { _ = cmd.Process.Signal(syscall.SIGINT) })
	err := cmd.Run()
	timer.Stop()
	text := out.String()
	if err != nil {
		t.Fatalf("shoalctl demo: %v\n%s", err, text)
	}
	t.Logf("shoalctl demo printed:\n%s", text)

	m := egressRe.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the demo's summary has no line %q", egressRe)
	}
	copies, _ := strconv.ParseFloat(m[1], 64)
	if direct := m[2]; direct != "4" {
		t.Errorf("the summary compares with %s direct pulls, want 4 (one per agent)", direct)
	}
	// The P2P swarm tests' bound: a layer leaves the origin about once,
	// at most twice, against four times for direct pulls. Less than once
	// would mean the metrics miss bytes sent.
	if copies < 1 || copies > 2 {
		t.Errorf("the origin sent %.2f copies of the image for 4 pulls through agents, want about 1 (at least 1, at most 2)", copies)
	}
	if n := strings.Count(text, "100%"); n != 4 {
		t.Errorf("%d agents show 100%%, want all 4", n)
	}
	checkStopped(t, text)
}

func TestDemoStopsEverythingOnCtrlC(t *testing.T) {
	// Big enough that generating and pushing the image take a while
	// after the signal comes.
	cmd := demoCommand(t, "--agents", "2", "--size", "256MiB", "--layers", "4")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	sent := false
	sc := bufio.NewScanner(pr)
	lines := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(lines)
	}()
	for sc.Scan() {
		text.WriteString(sc.Text() + "\n")
		if !sent && strings.HasPrefix(sc.Text(), "generating an image") {
			// Everything is started: interrupt as a user at the terminal
			// would (the terminal signals shoalctl's process group).
			if err := syscall.Kill(cmd.Process.Pid, syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			sent = true
		}
	}
	<-lines
	if !sent {
		t.Fatalf("the demo ended before starting everything:\n%s", text.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("shoalctl demo after SIGINT exited with status %d, want 130 (as a shell reports a Ctrl-C)\n%s", code, text.String())
	}
	if !strings.Contains(text.String(), "interrupted") {
		t.Errorf("the demo did not say it was interrupted:\n%s", text.String())
	}
	checkStopped(t, text.String())
}

// checkStopped fails the test for every process the demo said it started
// that still runs, and when its working directory is still there.
func checkStopped(t *testing.T, text string) {
	t.Helper()
	pids := pidRe.FindAllStringSubmatch(text, -1)
	if len(pids) == 0 {
		t.Fatalf("the demo named no pids:\n%s", text)
	}
	for _, m := range pids {
		pid, _ := strconv.Atoi(m[1])
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d that the demo started still exists after it ended (kill 0: %v)", pid, err)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if !strings.Contains(text, "stopped ") {
		t.Errorf("the demo did not say what it stopped:\n%s", text)
	}
	if m := dirRe.FindStringSubmatch(text); m == nil {
		t.Errorf("the demo did not name its working directory")
	} else if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the demo's working directory %s is still there after it ended (stat: %v)", m[1], err)
	}
}
