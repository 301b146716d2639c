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
	"github.com/shoal-dev/shoal/pkg/storage/internal/largestream"
)

// store is one Azurite for the package; each test has a prefix
// of its own.
var store *testenv.SharedObjectStore

// TestMain runs the reference suite in short mode, without its 5 GiB
// stream, which runs alone with SHOAL_LARGE_STREAM=1 (make large-streams;
// pkg/storage/internal/largestream). Short mode shrinks two concurrency
// tests (10 MiB instead of 128 MiB, 8 streams instead of 32).
func TestMain(m *testing.M) {
	flag.Parse()
	if err := largestream.Configure("TestReferenceSuite"); err != nil {
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
// against Azurite (TestMain says in which mode).
func TestReferenceSuite(t *testing.T) {
	d := newDriver(t)
	testsuites.Driver(t, func() (storage.Driver, error) { return d, nil }, false)
}
