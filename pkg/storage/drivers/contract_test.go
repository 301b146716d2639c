package drivers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// The reference suite leaves some of the contract open; Shoal's code relies
// on these answers, so every driver must give the same ones, except where a
// kind of store cannot (store's fields say which, and what the driver must
// do instead). Each test runs against every driver Open can build here.

// store is a driver under test, with what its kind of store can do.
type store struct {
	url string
	// appendsAfterPut: Writer(append=true) continues a file written with
	// PutContent. S3 objects and Azure block blobs cannot be appended to.
	appendsAfterPut bool
	// appendsAfterCommit: Writer(append=true) continues a file an earlier
	// writer committed (Azure's writers write append blobs; S3 can only
	// continue a multipart upload that was never completed).
	appendsAfterCommit bool
	// hierarchical: a file and a directory cannot share a name, and
	// directories can be moved. Object stores have only keys.
	hierarchical bool
}

// objectStores holds the object store servers of this package's run,
// started once in TestMain.
var objectStores = map[string]*testenv.SharedObjectStore{}

func TestMain(m *testing.M) {
	// Started one after the other: each start builds or installs its
	// server the first time, which two cores do better in turn.
	for _, kind := range testenv.ObjectStoreKinds {
		objectStores[kind] = testenv.StartSharedObjectStore(kind)
	}
	code := m.Run()
	for _, s := range objectStores {
		s.Stop()
	}
	os.Exit(code)
}

// eachDriver runs test against every driver Open can build here, each on
// an empty store: the object stores on their real servers (e2e/testenv).
func eachDriver(t *testing.T, test func(t *testing.T, d storage.Driver, s store)) {
	t.Helper()
	stores := map[string]func(t *testing.T) store{
		"inmemory": func(*testing.T) store {
			return store{url: "inmemory://", appendsAfterPut: true, appendsAfterCommit: true, hierarchical: true}
		},
		"filesystem": func(t *testing.T) store {
			return store{url: "file://" + t.TempDir(), appendsAfterPut: true, appendsAfterCommit: true, hierarchical: true}
		},
		"s3": func(t *testing.T) store {
			return store{url: objectStores[testenv.KindS3].FreshURL(t)}
		},
		"azure": func(t *testing.T) store {
			return store{url: objectStores[testenv.KindAzure].FreshURL(t), appendsAfterCommit: true}
		},
		"gcs": func(t *testing.T) store {
			return store{url: objectStores[testenv.KindGCS].FreshURL(t), appendsAfterPut: true, appendsAfterCommit: true}
		},
	}
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			s := mk(t)
			d, err := Open(context.Background(), s.url)
			if err != nil {
				t.Fatalf("Open(%q): %v", s.url, err)
			}
			test(t, d, s)
		})
	}
}

func writeAll(t *testing.T, w storage.FileWriter, p string) {
	t.Helper()
	if _, err := w.Write([]byte(p)); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

// openAppend opens an append writer on p, which holds committed content.
// A store that cannot append there may refuse when the writer is opened
// (the origin then starts a new part of the upload), never later and never
// by starting over: it returns nil then.
func openAppend(t *testing.T, d storage.Driver, p string, canAppend bool) storage.FileWriter {
	t.Helper()
	w, err := d.Writer(context.Background(), p, true)
	switch {
	case err != nil && canAppend:
		t.Fatalf("Writer(%s, append) on committed content: %v", p, err)
	case err != nil:
		t.Logf("Writer(%s, append) refused, as this store may: %v", p, err)
		return nil
	}
	return w
}

func TestAppendWriterStartsAtExistingSize(t *testing.T) {
	eachDriver(t, func(t *testing.T, d storage.Driver, s store) {
		ctx := context.Background()
		if err := d.PutContent(ctx, "/up/data", []byte("12345")); err != nil {
			t.Fatal(err)
		}
		if w := openAppend(t, d, "/up/data", s.appendsAfterPut); w != nil {
			appendAndCheck(t, d, w, "/up/data", "12345", "678")
		}

		// Without append, the file starts over.
		w, err := d.Writer(ctx, "/up/data", false)
		if err != nil {
			t.Fatal(err)
		}
		if w.Size() != 0 {
			t.Errorf("truncating writer Size() = %d, want 0", w.Size())
		}
		writeAll(t, w, "new")
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := d.GetContent(ctx, "/up/data")
		if err != nil || string(got) != "new" {
			t.Errorf("content after truncating write = %q, %v; want %q", got, err, "new")
		}
	})
}

// TestAppendAfterWriterCommit is the origin's chunked upload: a chunk is
// written and committed, the next continues the same file, possibly from
// another node (another driver on the same store).
func TestAppendAfterWriterCommit(t *testing.T) {
	eachDriver(t, func(t *testing.T, d storage.Driver, s store) {
		ctx := context.Background()
		w, err := d.Writer(ctx, "/up/part", false)
		if err != nil {
			t.Fatal(err)
		}
		writeAll(t, w, "12345")
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		other := d
		if s.url != "inmemory://" { // each inmemory:// is a store of its own
			if other, err = Open(ctx, s.url); err != nil {
				t.Fatal(err)
			}
		}
		if w := openAppend(t, other, "/up/part", s.appendsAfterCommit); w != nil {
			appendAndCheck(t, d, w, "/up/part", "12345", "678")
		}
	})
}

// appendAndCheck appends add through w, which must start at the size of
// old, and checks that p then holds old+add.
func appendAndCheck(t *testing.T, d storage.Driver, w storage.FileWriter, p, old, add string) {
	t.Helper()
	ctx := context.Background()
	if w.Size() != int64(len(old)) {
		t.Errorf("append writer Size() = %d before writing, want the existing %d", w.Size(), len(old))
	}
	writeAll(t, w, add)
	if w.Size() != int64(len(old)+len(add)) {
		t.Errorf("Size() = %d after appending %d bytes, want %d", w.Size(), len(add), len(old)+len(add))
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := d.GetContent(ctx, p)
	if err != nil || string(got) != old+add {
		t.Errorf("content = %q, %v; want %q", got, err, old+add)
	}
}

func TestWriterRefusesUseAfterItEnds(t *testing.T) {
	ends := map[string]func(context.Context, storage.FileWriter) error{
		"Close":  func(_ context.Context, w storage.FileWriter) error { return w.Close() },
		"Commit": func(ctx context.Context, w storage.FileWriter) error { return w.Commit(ctx) },
		"Cancel": func(ctx context.Context, w storage.FileWriter) error { return w.Cancel(ctx) },
	}
	eachDriver(t, func(t *testing.T, d storage.Driver, s store) {
		ctx := context.Background()
		for name, end := range ends {
			w, err := d.Writer(ctx, "/w/"+name, false)
			if err != nil {
				t.Fatal(err)
			}
			writeAll(t, w, "x")
			if err := end(ctx, w); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if _, err := w.Write([]byte("y")); err == nil {
				t.Errorf("Write after %s succeeded, want an error", name)
			}
			if err := w.Commit(ctx); err == nil {
				t.Errorf("Commit after %s succeeded, want an error", name)
			}
			if name != "Commit" {
				if err := w.Close(); err == nil {
					t.Errorf("Close after %s succeeded, want an error", name)
				}
			} else if err := w.Close(); err != nil {
				t.Errorf("Close after Commit: %v", err)
			}
		}
	})
}

func TestCancelRemovesTheFile(t *testing.T) {
	eachDriver(t, func(t *testing.T, d storage.Driver, s store) {
		ctx := context.Background()
		w, err := d.Writer(ctx, "/c/data", false)
		if err != nil {
			t.Fatal(err)
		}
		writeAll(t, w, "partial")
		if err := w.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = d.Stat(ctx, "/c/data")
		var notFound storage.PathNotFoundError
		if !errors.As(err, &notFound) {
			t.Errorf("Stat after Cancel returned %v, want PathNotFoundError", err)
		}
	})
}

func TestReaderOffsets(t *testing.T) {
	eachDriver(t, func(t *testing.T, d storage.Driver, s store) {
		ctx := context.Background()
		if err := d.PutContent(ctx, "/r", []byte("0123456789")); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			offset int64
			want   string
			err    bool
		}{
			{offset: 0, want: "0123456789"},
			{offset: 9, want: "9"},
			{offset: 10, want: ""},
			{offset: 11, err: true},
			{offset: -1, err: true},
		} {
			r, err := d.Reader(ctx, "/r", tc.offset)
			if tc.err {
				var invalid storage.InvalidOffsetError
				if !errors.As(err, &invalid) || invalid.Offset != tc.offset || invalid.Path != "/r" {
					t.Errorf("Reader at %d of a 10-byte file: error %v, want InvalidOffsetError for that offset and path", tc.offset, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("Reader at %d: %v", tc.offset, err)
				continue
			}
			got, err := io.ReadAll(r)
			_ = r.Close()
			if err != nil || string(got) != tc.want {
				t.Errorf("Reader at %d read %q, %v; want %q", tc.offset, got, err, tc.want)
			}
		}
	})
}

func TestConcurrentWritersToDifferentFiles(t *testing.T) {
	eachDriver(t, func(t *testing.T, d storage.Driver, s store) {
		ctx := context.Background()
		const writers = 8
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				p := fmt.Sprintf("/concurrent/%d/data", i)
				w, err := d.Writer(ctx, p, false)
				if err != nil {
					t.Error(err)
					return
				}
				chunk := bytes.Repeat([]byte{byte('a' + i)}, 4096)
				for range 64 {
					if _, err := w.Write(chunk); err != nil {
						t.Error(err)
						return
					}
				}
				if err := w.Commit(ctx); err != nil {
					t.Error(err)
				}
				if err := w.Close(); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for i := range writers {
			p := fmt.Sprintf("/concurrent/%d/data", i)
			got, err := d.GetContent(ctx, p)
			want := bytes.Repeat([]byte{byte('a' + i)}, 64*4096)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: %d bytes, %v; want %d bytes of %q", p, len(got), err, len(want), rune('a'+i))
			}
		}
	})
}

func TestMoveCreatesParentsAndReplacesFiles(t *testing.T) {
	eachDriver(t, func(t *testing.T, d storage.Driver, s store) {
		ctx := context.Background()
		if err := d.PutContent(ctx, "/_uploads/u/data", []byte("blob")); err != nil {
			t.Fatal(err)
		}
		if err := d.PutContent(ctx, "/blobs/ab/data", []byte("old")); err != nil {
			t.Fatal(err)
		}
		if err := d.Move(ctx, "/_uploads/u/data", "/blobs/ab/data"); err != nil {
			t.Fatalf("Move over an existing file: %v", err)
		}
		if got, err := d.GetContent(ctx, "/blobs/ab/data"); err != nil || string(got) != "blob" {
			t.Errorf("destination holds %q, %v; want %q", got, err, "blob")
		}
		if !s.hierarchical {
			return // object stores move files only; Shoal moves nothing else
		}
		if err := d.PutContent(ctx, "/dir/a/f", []byte("f")); err != nil {
			t.Fatal(err)
		}
		if err := d.Move(ctx, "/dir", "/deep/new/dir"); err != nil {
			t.Fatalf("Move of a directory to a path whose parents do not exist: %v", err)
		}
		if got, err := d.GetContent(ctx, "/deep/new/dir/a/f"); err != nil || string(got) != "f" {
			t.Errorf("moved tree holds %q, %v; want %q", got, err, "f")
		}
		var notFound storage.PathNotFoundError
		if _, err := d.Stat(ctx, "/dir"); !errors.As(err, &notFound) {
			t.Errorf("Stat of a moved directory's old path: %v, want PathNotFoundError", err)
		}
	})
}

func TestNotFoundAndInvalidAnswers(t *testing.T) {
	eachDriver(t, func(t *testing.T, d storage.Driver, s store) {
		ctx := context.Background()
		if err := d.PutContent(ctx, "/file", []byte("x")); err != nil {
			t.Fatal(err)
		}
		var notFound storage.PathNotFoundError
		// Listing a file, or reaching through one, finds nothing.
		if _, err := d.List(ctx, "/file"); !errors.As(err, &notFound) {
			t.Errorf("List of a file: %v, want PathNotFoundError", err)
		}
		if _, err := d.Stat(ctx, "/file/below"); !errors.As(err, &notFound) {
			t.Errorf("Stat below a file: %v, want PathNotFoundError", err)
		}
		if _, err := d.GetContent(ctx, "/file/below"); !errors.As(err, &notFound) {
			t.Errorf("GetContent below a file: %v, want PathNotFoundError", err)
		}
		if err := d.PutContent(ctx, "/dir/f", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := d.GetContent(ctx, "/dir"); err == nil {
			t.Error("GetContent of a directory succeeded, want an error")
		}
		if err := d.PutContent(ctx, "/file/below", nil); err == nil && s.hierarchical {
			t.Error("PutContent below a file succeeded, want an error")
		}
		var invalid storage.InvalidPathError
		for _, p := range []string{"/a/../b", "/.", "/a/./b", "relative", "/trailing/"} {
			if err := d.PutContent(ctx, p, nil); !errors.As(err, &invalid) {
				t.Errorf("PutContent(%q): %v, want InvalidPathError", p, err)
			}
		}
		if fi, err := d.Stat(ctx, "/"); err != nil || !fi.IsDir() {
			t.Errorf("Stat(/) = %v, %v; want a directory (the health check relies on it)", fi, err)
		}
	})
}
