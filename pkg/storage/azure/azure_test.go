package azure

import (
	"context"
	"flag"
	"net/url"
	"os"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// store is one Azurite for the package; each test has a prefix
// of its own.
var store *testenv.SharedObjectStore

// TestMain runs this package in short mode, whose only effect is on the
// reference suite: it skips the 5 GiB stream and shrinks two concurrency
// tests (10 MiB instead of 128 MiB, 8 streams instead of 32). Azurite
// stores the 5 GiB stream too slowly for CI's budget (measured in
// docs/storage.md) for what it adds: the reference driver appends in 4 MiB blocks whatever the
// size, and its many-block path is crossed by the suite's 10 MiB appends
// (docs/storage.md).
func TestMain(m *testing.M) {
	flag.Parse()
	if err := flag.Set("test.short", "true"); err != nil {
		panic(err)
	}
	store = testenv.StartSharedObjectStore(testenv.KindAzure)
	code := m.Run()
	store.Stop()
	os.Exit(code)
}

func newDriver(t testing.TB) storage.Driver {
	t.Helper()
	u, err := url.Parse(store.FreshURL(t))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(context.Background(), u)
	if err != nil {
		t.Fatalf("Open(%s): %v", u, err)
	}
	return d
}

// TestReferenceSuite runs the reference registry's driver test suite
// against Azurite, in short mode (TestMain says why).
func TestReferenceSuite(t *testing.T) {
	d := newDriver(t)
	testsuites.Driver(t, func() (storage.Driver, error) { return d, nil }, false)
}
