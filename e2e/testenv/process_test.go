package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartReportsAProcessThatExitsBeforeReady(t *testing.T) {
	_, err := Start(t.Context(), Options{
		Name:    "early-exit",
		Path:    "/bin/sh",
		Args:    []string{"-c", "echo cannot bind; exit 3"},
		LogPath: filepath.Join(t.TempDir(), "log"),
		Ready:   func(context.Context) error { return errors.New("never ready") },
	})
	if err == nil {
		t.Fatal("Start returned no error for a process that exited at once")
	}
	for _, want := range []string{"exited before becoming ready", "cannot bind"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error does not mention %q:\n%v", want, err)
		}
	}
}

func TestStopKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	p, err := Start(t.Context(), Options{
		Name: "stubborn",
		Path: "/bin/sh",
		Args: []string{"-c", `trap "" TERM; echo started; while :; do sleep 0.1; done`},
		// The trap is installed before "started" is printed: only then
		// does the signal meet a process that ignores it.
		LogPath: log,
		Ready:   logSays(log, "started"),
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = p.Stop(300 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "ignored SIGTERM") {
		t.Errorf("Stop error = %v, want one saying SIGTERM was ignored", err)
	}
	if !p.Exited() {
		t.Error("process still running after Stop")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s, want about the 300ms timeout", d)
	}
	if again := p.Stop(time.Second); again == nil || again.Error() != err.Error() {
		t.Errorf("second Stop = %v, want the first result %v", again, err)
	}
}

func TestStopReportsADataRaceInTheLog(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	p, err := Start(t.Context(), Options{
		Name:    "racy",
		Path:    "/bin/sh",
		Args:    []string{"-c", `echo "` + raceMarker + `"; exec sleep 30`},
		LogPath: log,
		Ready:   logSays(log, raceMarker), // the report is in the log before Stop reads it
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(5 * time.Second); err == nil || !strings.Contains(err.Error(), "data race") {
		t.Errorf("Stop error = %v, want one reporting the data race", err)
	}
}

// logSays is a readiness probe for a test's shell child: ready once the
// log at path holds text, which the script prints after its setup.
func logSays(path, text string) func(context.Context) error {
	return func(context.Context) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading the log: %w", err)
		}
		if !strings.Contains(string(b), text) {
			return fmt.Errorf("log does not say %q yet", text)
		}
		return nil
	}
}

func TestRegistryServesTheV2APIUntilStopped(t *testing.T) {
	s := Registry(t, t.TempDir())
	resp, err := http.Get(s.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ = %s, want 200", resp.Status)
	}
	if err := s.Stop(DefaultStopTimeout); err != nil {
		t.Logf("registry stop: %v", err) // the reference registry's exit status is not ours to judge
	}
	if !s.Exited() {
		t.Fatal("registry still running after Stop")
	}
}

func TestWorkspaceListsOnlyCommandsWithAMainPackage(t *testing.T) {
	w := ForTest(t)
	cmds, err := w.Commands()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range cmds {
		ok, err := w.hasMain(name)
		if err != nil || !ok {
			t.Errorf("Commands listed %q, which has no main package (err %v)", name, err)
		}
	}
	if _, err := w.Build(t.Context(), "no-such-command", BuildOptions{}); !errors.Is(err, ErrNoMain) {
		t.Errorf("Build of a missing command: err = %v, want ErrNoMain", err)
	}
}

// A server whose port another process took must not count as ready just
// because that other process answers the probe.
func TestStartDoesNotTakeAnotherProcesssListenerForTheChild(t *testing.T) {
	squatter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer squatter.Close()
	addr := strings.TrimPrefix(squatter.URL, "http://")
	_, err := Start(t.Context(), Options{
		Name:         "loser",
		Path:         "/bin/sh",
		Args:         []string{"-c", "sleep 1; echo bind: address already in use; exit 1"},
		LogPath:      filepath.Join(t.TempDir(), "log"),
		Ready:        HTTPReady(squatter.URL),
		ListenAddr:   addr,
		ReadyTimeout: 20 * time.Second,
	})
	if err == nil {
		t.Fatal("Start reported ready a process that never listened; the probe was answered by another listener")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Start error does not quote the child's bind failure:\n%v", err)
	}
}

func TestListensOnFindsOnlyThisProcesssListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if ok, err := listensOn(os.Getpid(), port); err != nil || !ok {
		t.Errorf("listensOn(self, %d) = %v, %v; want true", port, ok, err)
	}
	if ok, err := listensOn(1, port); err != nil || ok {
		t.Errorf("listensOn(pid 1, %d) = %v, %v; want false", port, ok, err)
	}
	l.Close()
	if ok, err := listensOn(os.Getpid(), port); err != nil || ok {
		t.Errorf("listensOn(self, %d) after Close = %v, %v; want false", port, ok, err)
	}
}

func TestFreeAddrNeverRepeatsAPort(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		a, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Fatalf("FreeAddr returned %s twice", a)
		}
		seen[a] = true
	}
}

func TestRestartRunsAKilledProcessAgainWithTheSameLogAndAFreshStop(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	runs := 1 // the run Ready waits for
	p, err := Start(t.Context(), Options{
		Name:    "phoenix",
		Path:    "/bin/sh",
		Args:    []string{"-c", `echo run; exec sleep 30`},
		LogPath: log,
		Ready: func(context.Context) error {
			if b, _ := os.ReadFile(log); strings.Count(string(b), "run") < runs {
				return errors.New("not started")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Restart(t.Context()); err == nil {
		t.Error("Restart of a running process succeeded, want an error")
	}
	first := p.PID()
	p.Kill()
	runs = 2
	if err := p.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if p.Exited() || p.PID() == first {
		t.Fatalf("after Restart: exited %v, pid %d (was %d), want a new running process", p.Exited(), p.PID(), first)
	}
	// sleep dies of SIGTERM, which Stop reports as unclean; what matters
	// is that this Stop acted on the new run, not the killed one.
	_ = p.Stop(5 * time.Second)
	if !p.Exited() {
		t.Error("Stop after Restart left the new run running: the stop of the killed run was returned again")
	}
	if b, _ := os.ReadFile(log); strings.Count(string(b), "run") != 2 {
		t.Errorf("log holds %q, want both runs' output appended", b)
	}
}
