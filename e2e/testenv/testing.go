package testenv

import (
	"errors"
	"os"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where a missing
// external dependency is a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable reports that something a test needs from outside (a binary
// not written yet, a tool that could not be built, a JVM) is missing: under
// CI=true the test fails with the message, elsewhere it is skipped.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("test dependency unavailable (CI=true makes this a failure): "+format, args...)
	}
	t.Skipf("skipping, test dependency unavailable (under CI=true this fails): "+format, args...)
}

// ForTest returns the workspace the test runs in.
func ForTest(t testing.TB) *Workspace {
	t.Helper()
	w, err := FindWorkspace()
	if err != nil {
		Unavailable(t, "%v", err)
	}
	return w
}

// Binary builds ./cmd/<name> for a test, with the race detector when the
// test itself runs with it. A command that has no main package yet is
// reported as Unavailable; a compile error fails the test.
func Binary(t testing.TB, name string) string {
	t.Helper()
	bin, err := ForTest(t).Build(t.Context(), name, BuildOptions{Race: raceEnabled})
	if errors.Is(err, ErrNoMain) {
		Unavailable(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Tool installs a pinned external tool (ReferenceRegistry, Crane,
// ConformanceSuite) for a test; failure to build it is Unavailable.
func Tool(t testing.TB, tool string) string {
	t.Helper()
	bin, err := ForTest(t).Install(t.Context(), tool)
	if err != nil {
		Unavailable(t, "%v", err)
	}
	return bin
}

// Origin builds and starts an origin on storage (a storage URL) and stops
// it when the test ends. Extra flags go to the origin's command line.
func Origin(t testing.TB, storage string, args ...string) *Server {
	t.Helper()
	bin := Binary(t, "origin")
	s, err := StartOrigin(t.Context(), OriginOptions{Binary: bin, Storage: storage, Dir: t.TempDir(), Args: args})
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, s.Process, true)
	return s
}

// Registry starts a reference registry on rootDir and stops it when the
// test ends.
func Registry(t testing.TB, rootDir string) *Server {
	t.Helper()
	bin := Tool(t, ReferenceRegistry)
	s, err := StartRegistry(t.Context(), RegistryOptions{Binary: bin, RootDir: rootDir, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, s.Process, false)
	return s
}

// stopOnCleanup stops p when the test ends and quotes its log if the test
// failed. strict makes an unclean exit a test error: Shoal's servers must
// shut down gracefully on SIGTERM, while the reference registry is only a
// tool here.
func stopOnCleanup(t testing.TB, p *Process, strict bool) {
	t.Cleanup(func() {
		err := p.Stop(DefaultStopTimeout)
		switch {
		case err != nil && strict:
			t.Errorf("stopping %s: %v", p.Name, err)
		case err != nil:
			t.Logf("stopping %s: %v", p.Name, err)
		}
		if t.Failed() {
			t.Log(p.LogTail(40))
		}
	})
}
