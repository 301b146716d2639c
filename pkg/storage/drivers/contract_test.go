package drivers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// The reference suite leaves some of the contract open; Shoal's code relies
// on these answers, so every driver must give the same ones. Each test runs
// against every driver Open can build here.

func eachDriver(t *testing.T, test func(t *testing.T, d storage.Driver)) {
	t.Helper()
	urls := map[string]string{
		"inmemory":   "inmemory://",
		"filesystem": "file://" + t.TempDir(),
	}
	for name, u := range urls {
		t.Run(name, func(t *testing.T) {
			d, err := Open(context.Background(), u)
			if err != nil {
				t.Fatalf("Open(%q): %v", u, err)
			}
			test(t, d)
		})
	}
}

func writeAll(t *testing.T, w storage.FileWriter, p string) {
	t.Helper()
	if _, err := w.Write([]byte(p)); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func TestAppendWriterStartsAtExistingSize(t *testing.T) {
	eachDriver(t, func(t *testing.T, d storage.Driver) {
		ctx := context.Background()
		if err := d.PutContent(ctx, "/up/data", []byte("12345")); err != nil {
			t.Fatal(err)
		}
		w, err := d.Writer(ctx, "/up/data", true)
		if err != nil {
			t.Fatal(err)
		}
		if w.Size() != 5 {
			t.Errorf("append writer Size() = %d before writing, want the existing 5", w.Size())
		}
		writeAll(t, w, "678")
		if w.Size() != 8 {
			t.Errorf("Size() = %d after appending 3 bytes, want 8", w.Size())
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := d.GetContent(ctx, "/up/data")
		if err != nil || string(got) != "12345678" {
			t.Errorf("content = %q, %v; want %q", got, err, "12345678")
		}

		// Without append, the file starts over.
		w, err = d.Writer(ctx, "/up/data", false)
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
		got, err = d.GetContent(ctx, "/up/data")
		if err != nil || string(got) != "new" {
			t.Errorf("content after truncating write = %q, %v; want %q", got, err, "new")
		}
	})
}

func TestWriterRefusesUseAfterItEnds(t *testing.T) {
	ends := map[string]func(context.Context, storage.FileWriter) error{
		"Close":  func(_ context.Context, w storage.FileWriter) error { return w.Close() },
		"Commit": func(ctx context.Context, w storage.FileWriter) error { return w.Commit(ctx) },
		"Cancel": func(ctx context.Context, w storage.FileWriter) error { return w.Cancel(ctx) },
	}
	eachDriver(t, func(t *testing.T, d storage.Driver) {
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
	eachDriver(t, func(t *testing.T, d storage.Driver) {
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
	eachDriver(t, func(t *testing.T, d storage.Driver) {
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
	eachDriver(t, func(t *testing.T, d storage.Driver) {
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
	eachDriver(t, func(t *testing.T, d storage.Driver) {
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
	eachDriver(t, func(t *testing.T, d storage.Driver) {
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
		if err := d.PutContent(ctx, "/file/below", nil); err == nil {
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
