package gcs

import (
	"context"
	"flag"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/largestream"
)

// store is one fake-gcs-server for the package; each test has a prefix
// of its own.
var store *testenv.SharedObjectStore

// TestMain runs the reference suite in short mode, without its 5 GiB
// stream, which runs alone with SHOAL_LARGE_STREAM=1 (make large-streams;
// pkg/storage/internal/largestream). Short mode shrinks two concurrency
// tests (10 MiB instead of 128 MiB, 8 streams instead of 32). The 5 GiB
// stream needs fake-gcs-server patched to stream resumable uploads to disk
// (e2e/testenv.FakeGCSServer, docs/storage.md): released, it holds an
// upload in memory and recomputes its checksums over all of it at every
// chunk.
func TestMain(m *testing.M) {
	flag.Parse()
	if err := largestream.Configure("TestReferenceSuite"); err != nil {
		panic(err)
	}
	store = testenv.StartSharedObjectStore(testenv.KindGCS)
	code := m.Run()
	store.Stop()
	os.Exit(code)
}

// newDriverAt opens the driver on storageURL (a FreshURL) with 1 MiB
// chunks, so that the tests' writes cross chunk boundaries; the 5 GiB
// stream's run (largestream.Enabled) keeps the default 16 MiB, as in
// production.
func newDriverAt(t testing.TB, storageURL string) storage.Driver {
	t.Helper()
	if !largestream.Enabled() {
		storageURL += "&chunkSize=1048576"
	}
	u, err := url.Parse(storageURL)
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
// against fake-gcs-server (TestMain says in which mode).
func TestReferenceSuite(t *testing.T) {
	d := newPruningDriver(t)
	testsuites.Driver(t, func() (storage.Driver, error) { return d, nil }, false)
}

// pruningDriver removes the directories fake-gcs-server's filesystem
// backend leaves behind once the last object under them is deleted or
// moved away. The suite's random paths reuse short names: after an object
// "x/y" is deleted, the backend keeps a directory "x", and a later object
// named "x" fails with a 500 ("rename ...: file exists"), which GCS itself,
// having no directories, never does.
type pruningDriver struct {
	storage.Driver
	root string // the driver's prefix in the backend's bucket directory
}

// newPruningDriver opens the driver on a fresh prefix, wrapped.
func newPruningDriver(t testing.TB) pruningDriver {
	t.Helper()
	u := store.FreshURL(t)
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return pruningDriver{newDriverAt(t, u), filepath.Join(store.DataDir(), url.PathEscape(p.Host), filepath.FromSlash(p.Path))}
}

func (d pruningDriver) Delete(ctx context.Context, path string) error {
	err := d.Driver.Delete(ctx, path)
	d.prune(path)
	return err
}

func (d pruningDriver) Move(ctx context.Context, src, dst string) error {
	err := d.Driver.Move(ctx, src, dst)
	d.prune(src)
	return err
}

// prune removes the empty directories at and under path, then its empty
// parents up to the driver's prefix. A directory another call is writing
// into at the same moment may go too: the driver retries the backend's
// failure, and the retry makes the directory again.
func (d pruningDriver) prune(path string) {
	dir := filepath.Join(d.root, filepath.FromSlash(path))
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Remove(dirs[i]) // fails, as it should, on a directory with files
	}
	for p := filepath.Dir(dir); len(p) > len(d.root); p = filepath.Dir(p) {
		if os.Remove(p) != nil {
			return // not empty: neither are its parents
		}
	}
}

// TestObjectNamedAsDeletedPrefix writes an object where one lay under a
// prefix of the same name, as the reference suite's random paths may: GCS
// has no directories, so this must work, and on fake-gcs-server it does
// only once pruningDriver removes what the backend leaves behind.
func TestObjectNamedAsDeletedPrefix(t *testing.T) {
	d := newPruningDriver(t)
	ctx := t.Context()
	if err := d.PutContent(ctx, "/x/y", []byte("under x")); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "/x"); err != nil {
		t.Fatal(err)
	}
	if err := d.PutContent(ctx, "/x", []byte("x itself")); err != nil {
		t.Fatalf("writing /x after deleting /x/y: %v", err)
	}
	if got, err := d.GetContent(ctx, "/x"); err != nil || string(got) != "x itself" {
		t.Fatalf("reading /x = %q, %v; want %q", got, err, "x itself")
	}
}
