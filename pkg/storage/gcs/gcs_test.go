package gcs

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

// store is one fake-gcs-server for the package; each test has a prefix
// of its own.
var store *testenv.SharedObjectStore

// TestMain runs this package in short mode, whose only effect is on the
// reference suite: it skips the 5 GiB stream and shrinks two concurrency
// tests (10 MiB instead of 128 MiB, 8 streams instead of 32).
// fake-gcs-server holds a resumable upload in memory and recomputes its
// MD5 and CRC32C over everything received at every chunk, so a stream's
// time grows with the square of its size: 128 MiB took 10 s here, 256 MiB
// 30 s, 512 MiB 106 s, 1 GiB 291 s, so 5 GiB would take about two hours
// (docs/storage.md). The driver's streaming is the SDK's resumable upload,
// which the suite's streams still cross chunk boundaries of: the test
// driver uses 1 MiB chunks.
func TestMain(m *testing.M) {
	flag.Parse()
	if err := flag.Set("test.short", "true"); err != nil {
		panic(err)
	}
	store = testenv.StartSharedObjectStore(testenv.KindGCS)
	code := m.Run()
	store.Stop()
	os.Exit(code)
}

func newDriver(t testing.TB) storage.Driver {
	t.Helper()
	u, err := url.Parse(store.FreshURL(t) + "&chunkSize=1048576")
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
// against fake-gcs-server, in short mode (TestMain says why).
func TestReferenceSuite(t *testing.T) {
	d := newDriver(t)
	testsuites.Driver(t, func() (storage.Driver, error) { return d, nil }, false)
}
