package testenv

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

// ObjectStoreKinds lists every object store kind, for tests that run
// against each.
var ObjectStoreKinds = []string{KindS3, KindAzure, KindGCS}

// ObjectStoreServer starts an object store of kind (KindS3, KindAzure,
// KindGCS) with an empty bucket for a test, puts its credentials in the
// test's environment (t.Setenv, so the test must not be parallel) and stops
// it when the test ends. A server that cannot be installed is Unavailable
// (a failure under CI=true); one that cannot start fails the test.
func ObjectStoreServer(t testing.TB, kind string) *ObjectStore {
	t.Helper()
	o, err := ForTest(t).StartObjectStore(t.Context(), kind, t.TempDir())
	if errors.Is(err, ErrToolUnavailable) {
		Unavailable(t, "%v", err)
	}
	if err != nil {
		t.Fatalf("object store %s: %v", kind, err)
	}
	stopOnCleanup(t, o.Process, false)
	for _, kv := range o.Env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return o
}

// SharedObjectStore starts an object store of kind for a whole test package
// (from TestMain, where no testing.TB exists yet), with its data under dir,
// and puts its credentials in the process's environment. Tests get it
// through RequireObjectStore; the caller stops it after m.Run.
func SharedObjectStore(kind, dir string) (*ObjectStore, error) {
	w, err := FindWorkspace()
	if err != nil {
		return nil, errors.Join(ErrToolUnavailable, err)
	}
	o, err := w.StartObjectStore(context.Background(), kind, dir)
	if err != nil {
		return nil, err
	}
	for _, kv := range o.Env {
		k, v, _ := strings.Cut(kv, "=")
		if err := os.Setenv(k, v); err != nil {
			_ = o.Stop(DefaultStopTimeout)
			return nil, err
		}
	}
	return o, nil
}

// RequireObjectStore returns o, the result of SharedObjectStore, or ends
// the test: Unavailable when the server could not be installed, a failure
// when it could not start.
func RequireObjectStore(t testing.TB, o *ObjectStore, err error) *ObjectStore {
	t.Helper()
	if errors.Is(err, ErrToolUnavailable) {
		Unavailable(t, "%v", err)
	}
	if err != nil {
		t.Fatalf("object store: %v", err)
	}
	return o
}
