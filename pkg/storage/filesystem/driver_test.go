package filesystem

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"

	"github.com/shoal-dev/shoal/pkg/storage"
)

func TestReferenceDriverSuite(t *testing.T) {
	root := t.TempDir()
	testsuites.Driver(t, func() (storage.Driver, error) { return New(root) }, false)
}

func newDriver(t *testing.T) (*Driver, string) {
	t.Helper()
	root := t.TempDir()
	d, err := New(root)
	if err != nil {
		t.Fatalf("New(%s): %v", root, err)
	}
	return d, root
}

func TestLayoutIsRegistryLayout(t *testing.T) {
	ctx := context.Background()
	d, root := newDriver(t)
	p := "/docker/registry/v2/repositories/library/alpine/_manifests/tags/latest/current/link"
	if err := d.PutContent(ctx, p, []byte("sha256:abc")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "docker/registry/v2/repositories/library/alpine/_manifests/tags/latest/current/link"))
	if err != nil {
		t.Fatalf("the file for %s is not where registry:2 keeps it: %v", p, err)
	}
	if string(got) != "sha256:abc" {
		t.Errorf("file on disk holds %q, want %q", got, "sha256:abc")
	}

	// And the other way: a file registry:2 wrote is visible.
	if err := os.MkdirAll(filepath.Join(root, "docker/registry/v2/blobs/sha256/ab"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "docker/registry/v2/blobs/sha256/ab/data"), []byte("blob"), 0o666); err != nil {
		t.Fatal(err)
	}
	got, err = d.GetContent(ctx, "/docker/registry/v2/blobs/sha256/ab/data")
	if err != nil || string(got) != "blob" {
		t.Errorf("GetContent of a file written outside the driver = %q, %v; want %q", got, err, "blob")
	}
}

func TestFilesGetUmaskedWorldReadableModes(t *testing.T) {
	ctx := context.Background()
	d, root := newDriver(t)
	if err := d.PutContent(ctx, "/put", []byte("x")); err != nil {
		t.Fatal(err)
	}
	w, err := d.Writer(ctx, "/written", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	put, err := os.Stat(filepath.Join(root, "put"))
	if err != nil {
		t.Fatal(err)
	}
	written, err := os.Stat(filepath.Join(root, "written"))
	if err != nil {
		t.Fatal(err)
	}
	// Both are created with 0666 less the umask; a temporary file made
	// with os.CreateTemp would keep 0600 after the rename and lock out a
	// registry:2 running as another user.
	if put.Mode().Perm() != written.Mode().Perm() {
		t.Errorf("PutContent made mode %v but Writer made %v; both should be 0666 less the umask", put.Mode().Perm(), written.Mode().Perm())
	}
}

func TestPutContentIsAtomic(t *testing.T) {
	ctx := context.Background()
	d, _ := newDriver(t)
	a := bytes.Repeat([]byte("a"), 256<<10)
	b := bytes.Repeat([]byte("b"), 128<<10)
	if err := d.PutContent(ctx, "/f", a); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			content := a
			if i%2 == 0 {
				content = b
			}
			if err := d.PutContent(ctx, "/f", content); err != nil {
				t.Errorf("PutContent: %v", err)
				break
			}
		}
		close(stop)
	})
	for r := range 2 {
		wg.Go(func() {
			for reads := 0; ; reads++ {
				select {
				case <-stop:
					return
				default:
				}
				got, err := d.GetContent(ctx, "/f")
				if err != nil {
					t.Errorf("reader %d, read %d: %v", r, reads, err)
					return
				}
				if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
					t.Errorf("reader %d saw %d bytes that are neither the old nor the new content", r, len(got))
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestTemporaryFilesAreHidden(t *testing.T) {
	ctx := context.Background()
	d, root := newDriver(t)
	if err := d.PutContent(ctx, "/a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// A temporary file left by a crash in the middle of a PutContent.
	if err := os.WriteFile(filepath.Join(root, tmpName, "leftover"), []byte("half"), 0o666); err != nil {
		t.Fatal(err)
	}

	keys, err := d.List(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "/a" {
		t.Errorf("List(/) = %q, want only [/a]: the temporary directory must not show", keys)
	}
	var walked []string
	if err := d.Walk(ctx, "/", func(fi storage.FileInfo) error {
		walked = append(walked, fi.Path())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(walked) != 1 || walked[0] != "/a" {
		t.Errorf("Walk(/) visited %q, want only [/a]", walked)
	}
	for _, p := range []string{"/" + tmpName, "/" + tmpName + "/leftover"} {
		_, err := d.GetContent(ctx, p)
		var invalid storage.InvalidPathError
		if !errors.As(err, &invalid) {
			t.Errorf("GetContent(%s) error = %v, want InvalidPathError: the name is reserved", p, err)
		}
		if err := d.PutContent(ctx, p, nil); !errors.As(err, &invalid) {
			t.Errorf("PutContent(%s) error = %v, want InvalidPathError", p, err)
		}
	}
}

func TestNewSweepsOnlyStaleTemporaryFiles(t *testing.T) {
	root := t.TempDir()
	if _, err := New(root); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(root, tmpName, "stale")
	fresh := filepath.Join(root, tmpName, "fresh")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTempAge)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := New(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a temporary file older than %v survived New (stat error %v)", staleTempAge, err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("New removed a fresh temporary file another process may be writing: %v", err)
	}
}

func TestPathsCannotEscapeRoot(t *testing.T) {
	ctx := context.Background()
	d, _ := newDriver(t)
	for _, p := range []string{"/..", "/a/../../etc/passwd", "/a/./b"} {
		_, err := d.GetContent(ctx, p)
		var invalid storage.InvalidPathError
		if !errors.As(err, &invalid) {
			t.Errorf("GetContent(%q) error = %v, want InvalidPathError", p, err)
		}
	}
}

func TestReaderStreamsFromTheFile(t *testing.T) {
	ctx := context.Background()
	d, _ := newDriver(t)
	if err := d.PutContent(ctx, "/f", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	r, err := d.Reader(ctx, "/f", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The origin hands the reader to http.ServeContent and io.Copy, which
	// use sendfile when the reader is an *os.File.
	if _, ok := r.(*os.File); !ok {
		t.Errorf("Reader returned %T, want *os.File", r)
	}
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "456789" {
		t.Errorf("Reader at offset 4 read %q, %v; want %q", got, err, "456789")
	}
}

func TestWriterAppendAcrossProcessesUsesCurrentEnd(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	// Two drivers over one directory stand for two origin nodes.
	d1, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	w, err := d1.Writer(ctx, "/_uploads/u/data", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("chunk1-")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = d2.Writer(ctx, "/_uploads/u/data", true)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != 7 {
		t.Errorf("append writer on the other node starts at size %d, want 7", w.Size())
	}
	if _, err := w.Write([]byte("chunk2")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := d1.GetContent(ctx, "/_uploads/u/data")
	if err != nil || string(got) != "chunk1-chunk2" {
		t.Errorf("content after two nodes wrote = %q, %v; want %q", got, err, "chunk1-chunk2")
	}
}
