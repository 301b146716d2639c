package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
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

// SharedObjectStore is one object store server for a whole test package,
// started from TestMain (where no testing.TB exists yet), each test using
// its own prefix of the bucket.
type SharedObjectStore struct {
	o   *ObjectStore
	err error // why it could not start
	dir string
}

// StartSharedObjectStore starts a store of kind for a package and puts its
// credentials in the process's environment. A failure to start is kept
// and reported by the first test that asks for the store (Require), as
// Unavailable or a failure.
func StartSharedObjectStore(kind string) *SharedObjectStore {
	s := &SharedObjectStore{}
	w, err := FindWorkspace()
	if err != nil {
		s.err = errors.Join(ErrToolUnavailable, err)
		return s
	}
	if s.dir, s.err = os.MkdirTemp("", "shoal-"+kind+"-store-"); s.err != nil {
		return s
	}
	if s.o, s.err = w.StartObjectStore(context.Background(), kind, s.dir); s.err != nil {
		return s
	}
	for _, kv := range s.o.Env {
		k, v, _ := strings.Cut(kv, "=")
		if s.err = os.Setenv(k, v); s.err != nil {
			return s
		}
	}
	return s
}

// Require returns the store, or ends the test: Unavailable when the server
// could not be installed, a failure when it could not start.
func (s *SharedObjectStore) Require(t testing.TB) *ObjectStore {
	t.Helper()
	if errors.Is(s.err, ErrToolUnavailable) {
		Unavailable(t, "%v", s.err)
	}
	if s.err != nil {
		t.Fatalf("object store: %v", s.err)
	}
	return s.o
}

// FreshURL is the storage URL of a prefix of the bucket no other test
// uses.
func (s *SharedObjectStore) FreshURL(t testing.TB) string {
	t.Helper()
	o := s.Require(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	return o.StorageURL("/test-" + hex.EncodeToString(b[:]))
}

// DataDir is the directory the server keeps its data in (for a store with
// a filesystem backend, the bucket is the directory of that name in it).
func (s *SharedObjectStore) DataDir() string { return filepath.Join(s.dir, "data") }

// Stop stops the server and removes its data.
func (s *SharedObjectStore) Stop() {
	if s.o != nil {
		if err := s.o.Stop(DefaultStopTimeout); err != nil {
			println("stopping the", s.o.Kind, "store:", err.Error())
		}
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}
