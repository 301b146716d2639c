package hdfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"

	minihdfs "github.com/shoal-dev/shoal/e2e/hdfs"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// One MiniDFSCluster for the whole package: starting one takes ~15-30 s.
var (
	cluster    *minihdfs.Cluster
	clusterErr error
)

func TestMain(m *testing.M) {
	start := time.Now()
	cluster, clusterErr = minihdfs.Start(context.Background(), minihdfs.DefaultOptions())
	if clusterErr == nil {
		println("test HDFS up at", cluster.NameNode(), "in", time.Since(start).Round(time.Millisecond).String())
	}
	code := m.Run()
	if cluster != nil {
		if err := cluster.Stop(); err != nil {
			println("stop test HDFS:", err.Error())
		}
	}
	os.Exit(code)
}

// newDriver opens a driver on a fresh root of the shared cluster, so tests
// do not see each other's files.
func newDriver(t testing.TB, query string) *Driver {
	t.Helper()
	u := freshRoot(t, query)
	d, err := Open(context.Background(), u)
	if err != nil {
		t.Fatalf("open %s: %v", u, err)
	}
	t.Cleanup(func() { d.(*Driver).Close() })
	return d.(*Driver)
}

// freshRoot returns the storage URL of a new root directory in the shared
// cluster, with query appended to its parameters.
func freshRoot(t testing.TB, query string) *url.URL {
	t.Helper()
	c := minihdfs.Require(t, cluster, clusterErr)
	var b [6]byte
	_, _ = rand.Read(b[:])
	u, err := url.Parse(c.URL("/shoal-test-"+hex.EncodeToString(b[:])) + "?user=shoal" + query)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestReferenceSuite runs the reference registry's driver test suite on the
// real HDFS.
func TestReferenceSuite(t *testing.T) {
	d := newDriver(t, "")
	testsuites.Driver(t, func() (storage.Driver, error) { return d, nil }, false)
}

// TestAppendFromAnotherDriver continues a file through a second driver (a
// second origin node: other clients, other leases) after the first closed
// it, as a chunked upload continued on another node does.
func TestAppendFromAnotherDriver(t *testing.T) {
	a := newDriver(t, "")
	ctx := context.Background()
	u, _ := url.Parse(cluster.URL(a.root) + "?user=shoal")
	other, err := Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	b := other.(*Driver)
	defer b.Close()

	part1 := bytes.Repeat([]byte("a"), 3<<20+17)
	part2 := bytes.Repeat([]byte("b"), 1<<20+5)

	w, err := a.Writer(ctx, "/uploads/x/data", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(part1); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	w, err = b.Writer(ctx, "/uploads/x/data", true)
	if err != nil {
		t.Fatalf("append from another driver: %v", err)
	}
	if w.Size() != int64(len(part1)) {
		t.Fatalf("append writer starts at size %d, want %d", w.Size(), len(part1))
	}
	if _, err := w.Write(part2); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	got, err := a.GetContent(ctx, "/uploads/x/data")
	if err != nil {
		t.Fatal(err)
	}
	if want := append(part1, part2...); !bytes.Equal(got, want) {
		t.Fatalf("content after append through two drivers: %d bytes, want %d", len(got), len(want))
	}
}

// TestNameNodeOutage stops the namenode: every operation must fail with an
// error that matches storage.ErrUnavailable and names HDFS, a PutContent
// during the outage must leave nothing behind, and the same driver must
// serve again once the namenode is back.
func TestNameNodeOutage(t *testing.T) {
	d := newDriver(t, "")
	ctx := context.Background()
	if err := d.PutContent(ctx, "/before", []byte("old")); err != nil {
		t.Fatal(err)
	}

	if err := cluster.StopNameNode(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			if err := cluster.StartNameNode(); err != nil {
				t.Errorf("restart namenode after failed test: %v", err)
			}
		}
	}()

	checkUnavailable := func(op string, err error) {
		t.Helper()
		switch {
		case err == nil:
			t.Errorf("%s with the namenode stopped succeeded", op)
		case !errors.Is(err, storage.ErrUnavailable) || !IsUnavailable(err):
			t.Errorf("%s with the namenode stopped: %v; want an error matching storage.ErrUnavailable", op, err)
		case !strings.Contains(err.Error(), "HDFS"):
			t.Errorf("%s with the namenode stopped: %q does not name HDFS", op, err)
		}
	}
	_, err := d.GetContent(ctx, "/before")
	checkUnavailable("GetContent", err)
	checkUnavailable("PutContent", d.PutContent(ctx, "/during", []byte("new")))
	_, err = d.Stat(ctx, "/before")
	checkUnavailable("Stat", err)
	_, err = d.List(ctx, "/")
	checkUnavailable("List", err)
	_, err = d.Writer(ctx, "/during-stream", false)
	checkUnavailable("Writer", err)
	checkUnavailable("Move", d.Move(ctx, "/before", "/moved"))
	checkUnavailable("Walk", d.Walk(ctx, "/", func(storage.FileInfo) error { return nil }))

	if err := cluster.StartNameNode(); err != nil {
		t.Fatal(err)
	}
	restarted = true

	// StartNameNode returns once the namenode serves writes. The driver
	// replaces clients whose namenode connection broke, so every client of
	// the pool, used during the outage or idle, serves on its first call.
	for i := 0; i < d.cfg.Clients; i++ {
		got, err := d.GetContent(ctx, "/before")
		if err != nil {
			t.Fatalf("GetContent %d of %d (one per pooled client) after the namenode restarted: %v", i+1, d.cfg.Clients, err)
		}
		if string(got) != "old" {
			t.Fatalf("content after outage = %q, want %q", got, "old")
		}
	}
	if _, err := d.Stat(ctx, "/during"); !errors.As(err, new(storage.PathNotFoundError)) {
		t.Fatalf("Stat of a file put during the outage: %v; want PathNotFoundError", err)
	}
	names, err := d.List(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "/before" {
		t.Fatalf("root after outage lists %q, want only /before", names)
	}
	if err := d.PutContent(ctx, "/after", []byte("x")); err != nil {
		t.Fatalf("PutContent after the namenode restarted: %v", err)
	}
}

// TestWalkMatchesFallback compares the driver's Walk with the reference
// WalkFallback (List + Stat) on one tree, with and without start hints,
// skips and early stops.
func TestWalkMatchesFallback(t *testing.T) {
	d := newDriver(t, "")
	ctx := context.Background()
	for _, p := range []string{
		"/a/b/c", "/a/b/d", "/a/b-c/e", "/a/ba", "/a/c", "/b", "/c/d/e/f", "/c/d/g", "/c/e",
	} {
		if err := d.PutContent(ctx, p, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	collect := func(walk func(storage.WalkFn) error, skip, stopAt string) ([]string, error) {
		var got []string
		err := walk(func(fi storage.FileInfo) error {
			got = append(got, fi.Path()+map[bool]string{true: "/", false: ""}[fi.IsDir()])
			switch fi.Path() {
			case skip:
				return storage.ErrSkipDir
			case stopAt:
				return storage.ErrFilledBuffer
			}
			return nil
		})
		return got, err
	}
	for _, tc := range []struct{ from, hint, skip, stop string }{
		{from: "/"},
		{from: "/a"},
		{from: "/c/d"},
		{from: "/", skip: "/a/b"},
		{from: "/", stop: "/a/ba"},
		{from: "/", hint: "/a/b/c"},
		{from: "/", hint: "/a/b"},
		{from: "/", hint: "/a/b-c/e"},
		{from: "/", hint: "/a/zzz"},
		{from: "/", hint: "/c/d/e"},
		{from: "/a", hint: "/b"},
		{from: "/c", hint: "/a"},
		{from: "/a", hint: "/a"},
	} {
		opt := storage.WalkOptions{StartAfterHint: tc.hint}
		withHint := func(o *storage.WalkOptions) { *o = opt }
		got, err := collect(func(f storage.WalkFn) error { return d.Walk(ctx, tc.from, f, withHint) }, tc.skip, tc.stop)
		if err != nil {
			t.Fatalf("Walk(%+v): %v", tc, err)
		}
		want, err := collect(func(f storage.WalkFn) error { return storage.WalkFallback(ctx, d, tc.from, f, withHint) }, tc.skip, tc.stop)
		if err != nil {
			t.Fatalf("WalkFallback(%+v): %v", tc, err)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("Walk(%+v)\n got %v\nwant %v", tc, got, want)
		}
	}

	if err := d.Walk(ctx, "/nope", func(storage.FileInfo) error { return nil }); !errors.As(err, new(storage.PathNotFoundError)) {
		t.Errorf("Walk of a missing directory: %v; want PathNotFoundError", err)
	}
	boom := errors.New("boom")
	if err := d.Walk(ctx, "/", func(storage.FileInfo) error { return boom }); err != boom {
		t.Errorf("Walk returned %v; want the walk function's own error", err)
	}
}

// TestReaderPastEnd checks the offset rules against the library's own
// Seek, which refuses offsets past the end with an error of its own.
func TestReaderPastEnd(t *testing.T) {
	d := newDriver(t, "")
	ctx := context.Background()
	if err := d.PutContent(ctx, "/f", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	_, err := d.Reader(ctx, "/f", 11)
	var ioe storage.InvalidOffsetError
	if !errors.As(err, &ioe) || ioe.Offset != 11 || ioe.Path != "/f" {
		t.Fatalf("Reader at offset 11 of a 10-byte file: %v; want InvalidOffsetError{/f, 11}", err)
	}
	r, err := d.Reader(ctx, "/f", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "456789" {
		t.Fatalf("read from offset 4 = %q, %v; want %q", b, err, "456789")
	}
	if _, err := d.Reader(ctx, "/", 0); !errors.As(err, new(storage.InvalidPathError)) {
		t.Fatalf("Reader of /: %v; want InvalidPathError", err)
	}
}

// TestReadSurvivesDataNodeRestarts restarts two of the three datanodes while
// four readers stream the same file: with replication 2, a reader whose
// datanode goes away must carry on from the other replica, and every reader
// must get the exact content.
func TestReadSurvivesDataNodeRestarts(t *testing.T) {
	d := newDriver(t, "")
	ctx := context.Background()
	content := make([]byte, 48<<20)
	_, _ = rand.Read(content)
	if err := d.PutContent(ctx, "/blob", content); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(content)

	const readers = 4
	started := make(chan struct{}, readers)
	proceed := make(chan struct{})
	errs := make(chan error, readers)
	for i := 0; i < readers; i++ {
		go func() {
			r, err := d.Reader(ctx, "/blob", 0)
			if err != nil {
				errs <- err
				started <- struct{}{}
				return
			}
			defer r.Close()
			h := sha256.New()
			// Read a little so that the reader is connected to a datanode
			// when the restarts begin.
			if _, err := io.CopyN(h, r, 1<<20); err != nil {
				errs <- err
				started <- struct{}{}
				return
			}
			started <- struct{}{}
			<-proceed
			if _, err := io.Copy(h, r); err != nil {
				errs <- fmt.Errorf("read after datanode restarts: %w", err)
				return
			}
			if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
				errs <- fmt.Errorf("read content sha256 %x, want %x", got, want)
				return
			}
			errs <- nil
		}()
	}
	for i := 0; i < readers; i++ {
		<-started
	}
	// The restarted node moves to the end of the cluster's list: restarting
	// index 0 twice restarts two different datanodes.
	for i := 0; i < 2; i++ {
		if err := cluster.RestartDataNode(0); err != nil {
			close(proceed)
			t.Fatal(err)
		}
	}
	close(proceed)
	for i := 0; i < readers; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestAppendWhileHeldElsewhere: a file another client still writes (or a
// dead writer's file, until its lease expires) cannot be appended to; the
// error must say why instead of naming only a Java exception.
func TestAppendWhileHeldElsewhere(t *testing.T) {
	a := newDriver(t, "")
	ctx := context.Background()
	u, _ := url.Parse(cluster.URL(a.root) + "?user=shoal")
	other, err := Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	b := other.(*Driver)
	defer b.Close()

	w, err := a.Writer(ctx, "/held", false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer w.Cancel(ctx)
	if _, err := w.Write([]byte("part")); err != nil {
		t.Fatal(err)
	}
	_, err = b.Writer(ctx, "/held", true)
	if err == nil || !strings.Contains(err.Error(), "held open by another HDFS client") {
		t.Fatalf("append to a file another client writes: %v; want an error explaining the lease", err)
	}
	if IsUnavailable(err) {
		t.Fatalf("a lease conflict is reported as an outage: %v", err)
	}
}

// TestRepeatedAppends appends to small files again and again, as chunked
// uploads do. The library does not bump a block's generation stamp on
// append, so without the driver's wait for replicas (appendFile) about one
// append in fifteen failed on a replica left behind by the previous one.
func TestRepeatedAppends(t *testing.T) {
	d := newDriver(t, "")
	ctx := context.Background()

	// The wait depends on reading the library's private block list; if that
	// stops working, the driver silently stops waiting: catch it here.
	if err := d.PutContent(ctx, "/probe", []byte("x")); err != nil {
		t.Fatal(err)
	}
	c, err := d.pool.get()
	if err != nil {
		t.Fatal(err)
	}
	n, err := lastBlockReplicas(c, d.full("/probe"), 1)
	d.pool.put(c, err)
	if err != nil || n < 1 {
		t.Fatalf("lastBlockReplicas = %d, %v; want at least 1 (did the library's FileReader change?)", n, err)
	}

	for i := 0; i < 30; i++ {
		p := fmt.Sprintf("/uploads/%d/data", i)
		var want []byte
		for j := 0; j < 4; j++ {
			w, err := d.Writer(ctx, p, j > 0)
			if err != nil {
				t.Fatalf("file %d, writer %d: %v", i, j, err)
			}
			chunk := bytes.Repeat([]byte{byte('a' + j)}, 32+j)
			if _, err := w.Write(chunk); err != nil {
				t.Fatalf("file %d, append %d: %v", i, j, err)
			}
			if err := w.Close(); err != nil {
				t.Fatalf("file %d, close %d: %v", i, j, err)
			}
			want = append(want, chunk...)
		}
		got, err := d.GetContent(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("file %d after 3 appends: %q, want %q", i, got, want)
		}
	}
}
