package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/url"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// newStagedDriver opens a driver with parts of S3's minimum, 5 MiB, so
// that a few MiB make a multipart upload, and returns it with its inner
// driver (the test's view of open uploads).
func newStagedDriver(t *testing.T) (storage.Driver, storage.StagedWriter, *driver) {
	t.Helper()
	u, err := url.Parse(store.FreshURL(t) + "&chunkSize=5242880")
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	sw, ok := storage.StagedWriterOf(d)
	if !ok {
		t.Fatal("the S3 driver offers no staged writes")
	}
	return d, sw, d.(*s3Driver).staged.inner
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeStaged opens a staged writer of p and writes data to it in writes
// that straddle part boundaries.
func writeStaged(t *testing.T, sw storage.StagedWriter, p, stage string, data []byte) storage.FileWriter {
	t.Helper()
	w, err := sw.StagedWriter(context.Background(), p, stage)
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1<<20+7)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatalf("writing: %v", err)
		}
		rest = rest[n:]
	}
	if w.Size() != int64(len(data)) {
		t.Errorf("Size() = %d after writing %d bytes", w.Size(), len(data))
	}
	return w
}

// content is what a reader of p sees: its bytes, or nil if there is no
// file.
func content(t *testing.T, d storage.Driver, p string) []byte {
	t.Helper()
	b, err := d.GetContent(context.Background(), p)
	if errors.As(err, new(storage.PathNotFoundError)) {
		return nil
	}
	if err != nil {
		t.Fatalf("reading %s: %v", p, err)
	}
	return b
}

// TestStagedWriteIsInvisibleUntilCommit: a staged write, of less than a
// part (one PutObject at Commit) or of several parts (a multipart upload),
// shows nothing at its path before Commit, and leaves a file already there
// as it was, then replaces it whole; the stage keeps nothing after.
func TestStagedWriteIsInvisibleUntilCommit(t *testing.T) {
	d, sw, inner := newStagedDriver(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		size int
		old  []byte
	}{
		{"small-new", 3000, nil},
		{"multipart-new", 12<<20 + 3, nil},
		{"small-over-a-file", 3000, []byte("the file before")},
		{"multipart-over-a-file", 12<<20 + 3, []byte("the file before")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, stage := "/blobs/"+tc.name+"/data", "/uploads/"+tc.name
			if tc.old != nil {
				if err := d.PutContent(ctx, p, tc.old); err != nil {
					t.Fatal(err)
				}
			}
			want := randomBytes(t, tc.size)
			w := writeStaged(t, sw, p, stage, want)
			if got := content(t, d, p); !bytes.Equal(got, tc.old) {
				t.Fatalf("before Commit, %s holds %d bytes; want what was there (%d bytes)", p, len(got), len(tc.old))
			}
			if err := w.Commit(ctx); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			if got := content(t, d, p); !bytes.Equal(got, want) {
				t.Fatalf("after Commit, %s holds %d bytes that differ from the %d written", p, len(got), len(want))
			}
			if open := openUploads(t, inner); len(open) != 0 {
				t.Errorf("multipart uploads left open after Commit: %v", open)
			}
			if l, err := d.List(ctx, stage); err == nil {
				t.Errorf("the stage holds %v after Commit; want nothing", l)
			}
		})
	}
}

// TestCancelledStagedWriteLeavesNothing: Cancel (and Close without
// Commit) aborts the upload: nothing at the path, or the file that was
// there unchanged, no open upload, no marker.
func TestCancelledStagedWriteLeavesNothing(t *testing.T) {
	d, sw, inner := newStagedDriver(t)
	ctx := context.Background()
	old := []byte("the file before")
	if err := d.PutContent(ctx, "/blobs/b/data", old); err != nil {
		t.Fatal(err)
	}
	for _, end := range []string{"Cancel", "Close"} {
		for _, p := range []string{"/blobs/a/data", "/blobs/b/data"} {
			w := writeStaged(t, sw, p, "/uploads/"+end, randomBytes(t, 11<<20))
			if end == "Cancel" {
				if err := w.Cancel(ctx); err != nil {
					t.Fatalf("Cancel: %v", err)
				}
			} else if err := w.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
		if got := content(t, d, "/blobs/a/data"); got != nil {
			t.Errorf("after %s, a new file has %d bytes; want none", end, len(got))
		}
		if got := content(t, d, "/blobs/b/data"); !bytes.Equal(got, old) {
			t.Errorf("after %s, the file already there has %d bytes; want it unchanged", end, len(got))
		}
		if open := openUploads(t, inner); len(open) != 0 {
			t.Errorf("multipart uploads left open after %s: %v", end, open)
		}
		if l, err := d.List(ctx, "/uploads/"+end); err == nil {
			t.Errorf("the stage holds %v after %s; want nothing", l, end)
		}
	}
}

// TestStagedWriteOfAKilledProcessGoesWithItsStage: a writer neither
// committed nor cancelled (its process killed) leaves an open multipart
// upload at the file's key, which no listing shows; deleting its stage
// aborts it, and not the upload of another stage's writer of the same
// file.
func TestStagedWriteOfAKilledProcessGoesWithItsStage(t *testing.T) {
	d, sw, inner := newStagedDriver(t)
	ctx := context.Background()
	killed := d.(*s3Driver).staged.open(ctx, "/blobs/a/data", "/uploads/killed")
	if _, err := killed.Write(randomBytes(t, 11<<20)); err != nil {
		t.Fatal(err)
	}
	killed.Wait() // its parts are stored; then its process is gone
	other := writeStaged(t, sw, "/blobs/a/data", "/uploads/other", randomBytes(t, 6<<20))
	if open := openUploads(t, inner); len(open) != 2 {
		t.Fatalf("open multipart uploads of the two writers: %v, want 2 at blobs/a/data", open)
	}
	if err := d.Delete(ctx, "/uploads/killed"); err != nil {
		t.Fatalf("Delete of the stage: %v", err)
	}
	if open := openUploads(t, inner); len(open) != 1 {
		t.Errorf("open multipart uploads after deleting the killed writer's stage: %v, want only the other writer's", open)
	}
	if got := content(t, d, "/blobs/a/data"); got != nil {
		t.Errorf("blobs/a/data has %d bytes; no writer committed", len(got))
	}
	want := randomBytes(t, 100)
	if _, err := other.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := other.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if open := openUploads(t, inner); len(open) != 0 {
		t.Errorf("open multipart uploads at the end: %v", open)
	}
}
