package testenv

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// Shared is a setup the tests of one package share (servers that take long
// to start): started by the first test that needs it, stopped once by
// TestMain after every test has run.
//
//	var shared testenv.Shared[*env]
//	func TestMain(m *testing.M) { os.Exit(shared.Main(m, "e2e/x", (*env).stop)) }
//	func setup(t *testing.T) *env { return shared.Get(t, "the x setup", start) }
type Shared[T any] struct {
	once sync.Once
	v    T
	err  error
	ran  bool // start has returned
}

// Get returns the setup, running start on first use. A start that failed
// (and cleaned up after itself) fails every test that asks, with its error.
func (s *Shared[T]) Get(t testing.TB, what string, start func() (T, error)) T {
	t.Helper()
	s.once.Do(func() {
		s.v, s.err = start()
		s.ran = true
	})
	if s.err != nil {
		t.Fatalf("starting %s: %v", what, s.err)
	}
	return s.v
}

// Main runs the package's tests, then stop on the setup if a test started
// it; a stop that fails fails the run. It returns the exit code for
// os.Exit. pkg names the package in what it prints.
func (s *Shared[T]) Main(m *testing.M, pkg string, stop func(T) error) int {
	return s.After(m.Run(), pkg, stop)
}

// After is Main's second half, for a package with a second shared setup:
// given the exit code of the run, it stops the setup if a test started it
// and returns the code to exit with.
//
//	code := shared.Main(m, "e2e/x", (*env).stop)
//	os.Exit(other.After(code, "e2e/x", (*otherEnv).stop))
func (s *Shared[T]) After(code int, pkg string, stop func(T) error) int {
	if s.ran && s.err == nil {
		if err := stop(s.v); err != nil {
			fmt.Fprintf(os.Stderr, "%s: stopping the shared setup: %v\n", pkg, err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// StopAll stops processes in reverse start order (the last started may
// depend on the first), quoting the log of each that did not stop cleanly.
func StopAll(procs []*Process) error {
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if err := p.Stop(DefaultStopTimeout); err != nil {
			errs = append(errs, fmt.Errorf("%w\n%s", err, p.LogTail(30)))
		}
	}
	return errors.Join(errs...)
}

// Kept reports whether KEEP_E2E_DIR is set: setups then leave their
// directories (logs, storage) behind to be read after the run.
func Kept() bool { return os.Getenv("KEEP_E2E_DIR") != "" }

// RemoveDir removes a setup's directory, or says where it is when Kept.
func RemoveDir(pkg, dir string) {
	if Kept() {
		fmt.Fprintln(os.Stderr, pkg+": kept", dir)
		return
	}
	_ = os.RemoveAll(dir)
}

// TestDir returns a new directory for one test's processes (logs,
// storage), removed when the test ends unless it failed or Kept: unlike
// t.TempDir, a failed test's logs (race reports among them) are still
// there to be read, and the test says where.
func TestDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shoal-"+strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())+"-")
	if err != nil {
		t.Fatalf("creating the test's directory: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() || Kept() {
			t.Logf("logs and data kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}
