package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"io"
	"net/url"
	"os"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/largestream"
)

// store is one S3 gateway for the package; each test has a prefix
// of its own.
var store *testenv.SharedObjectStore

// TestMain runs the reference suite in short mode, without its 5 GiB
// stream, which runs alone with SHOAL_LARGE_STREAM=1 (make large-streams;
// pkg/storage/internal/largestream). Short mode shrinks two concurrency
// tests (10 MiB instead of 128 MiB, 8 streams instead of 32): the whole
// suite took 370 s against the S3 gateway here without the race detector.
func TestMain(m *testing.M) {
	flag.Parse()
	if err := largestream.Configure("TestReferenceSuite"); err != nil {
		panic(err)
	}
	store = testenv.StartSharedObjectStore(testenv.KindS3)
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
// against the S3 gateway (TestMain says in which mode).
func TestReferenceSuite(t *testing.T) {
	d := newDriver(t)
	testsuites.Driver(t, func() (storage.Driver, error) { return d, nil }, false)
}

// TestLargeObject streams an object of several multipart parts (10 MiB
// each, the last shorter), moves it above the 32 MiB threshold where the
// reference driver copies in parts, and reads it back whole and from
// offsets inside the parts.
func TestLargeObject(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	want := make([]byte, 48<<20+12345)
	if _, err := rand.Read(want); err != nil {
		t.Fatal(err)
	}
	w, err := d.Writer(ctx, "/_uploads/big/data", false)
	if err != nil {
		t.Fatal(err)
	}
	for rest := want; len(rest) > 0; {
		n := min(len(rest), 3<<20+7) // writes that straddle part boundaries
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatalf("writing: %v", err)
		}
		rest = rest[n:]
	}
	if w.Size() != int64(len(want)) {
		t.Errorf("Size() = %d after writing %d bytes", w.Size(), len(want))
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Move(ctx, "/_uploads/big/data", "/blobs/big/data"); err != nil {
		t.Fatalf("Move of a %d-byte object: %v", len(want), err)
	}
	if _, err := d.Stat(ctx, "/_uploads/big/data"); err == nil {
		t.Error("the source of a Move is still there")
	}
	for _, off := range []int64{0, 10<<20 - 1, 10 << 20, 33<<20 + 5, int64(len(want)) - 1} {
		r, err := d.Reader(ctx, "/blobs/big/data", off)
		if err != nil {
			t.Fatalf("Reader at %d: %v", off, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, want[off:]) {
			t.Errorf("Reader at %d: %d bytes (err %v) that differ from the %d written there", off, len(got), err, len(want)-int(off))
		}
	}
}
