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
// tests (10 MiB instead of 128 MiB, 8 streams instead of 32). Unlike the
// other drivers' (make large-streams), this one's 5 GiB stream cannot run
// on fake-gcs-server, which holds a resumable upload in memory and
// recomputes its MD5 and CRC32C over everything received at every chunk:
// with 1 MiB chunks 1 GiB took 291 s (time grows with the square of the
// size), with 512 MiB chunks 1 GiB took 74 s and the server's resident
// memory peaked at 6.5 GiB, so 5 GiB would need well over the machine's
// memory (docs/storage.md). The suite's streams still cross chunk
// boundaries: the test driver uses 1 MiB chunks.
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
