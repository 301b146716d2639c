// Package stagedtest holds the test of storage.StagedWriter that every
// object store driver with staged writes runs on its store's server.
package stagedtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// InvisibleUntilCommit checks d's staged writes: a write of nothing, of
// less than a part (sent whole at Commit) or of several parts of partSize
// (sent as they fill), shows nothing at its path or in a listing before
// Commit, leaves a file already there as it was, then replaces it whole,
// and stays after the Close that follows; a cancelled or closed write
// leaves nothing and cannot be committed after, and a write of the same
// path after it commits its own bytes only.
func InvisibleUntilCommit(t *testing.T, d storage.Driver, partSize int) {
	sw, ok := storage.StagedWriterOf(d)
	if !ok {
		t.Fatalf("the %s driver offers no staged writes", d.Name())
	}
	ctx := context.Background()
	read := func(p string) []byte {
		t.Helper()
		b, err := d.GetContent(ctx, p)
		if errors.As(err, new(storage.PathNotFoundError)) {
			return nil
		}
		if err != nil {
			t.Fatalf("reading %s: %v", p, err)
		}
		return b
	}
	sameAs := func(got, want []byte) bool { return bytes.Equal(got, want) && (got == nil) == (want == nil) }
	write := func(p string, size int) (storage.FileWriter, []byte) {
		t.Helper()
		data := make([]byte, size)
		_, _ = rand.Read(data)
		w, err := sw.StagedWriter(ctx, p, "/uploads/x")
		if err != nil {
			t.Fatal(err)
		}
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1<<20+7) // writes that straddle parts
			if _, err := w.Write(rest[:n]); err != nil {
				t.Fatalf("writing %s: %v", p, err)
			}
			rest = rest[n:]
		}
		if w.Size() != int64(size) {
			t.Fatalf("writing %s: Size %d after %d bytes", p, w.Size(), size)
		}
		return w, data
	}
	old := []byte("the file before")
	for _, tc := range []struct {
		name string
		size int
		old  []byte
	}{
		{"empty-new", 0, nil},
		{"small-new", 3000, nil},
		{"parts-new", 2*partSize + 3, nil},
		{"small-over-a-file", 3000, old},
		{"parts-over-a-file", 2*partSize + 3, old},
	} {
		p := "/blobs/" + tc.name + "/data"
		if tc.old != nil {
			if err := d.PutContent(ctx, p, tc.old); err != nil {
				t.Fatal(err)
			}
		}
		for _, end := range []string{"Cancel", "Close"} {
			w, _ := write(p, tc.size)
			var err error
			if end == "Cancel" {
				err = w.Cancel(ctx)
			} else {
				err = w.Close()
			}
			if err != nil {
				t.Fatalf("%s: %s: %v", tc.name, end, err)
			}
			if got := read(p); !sameAs(got, tc.old) {
				t.Fatalf("%s: after %s, %s holds %d bytes; want what was there (%d bytes)", tc.name, end, p, len(got), len(tc.old))
			}
			if err := w.Commit(ctx); err == nil {
				t.Fatalf("%s: Commit after %s succeeded", tc.name, end)
			}
		}
		w, want := write(p, tc.size)
		if got := read(p); !sameAs(got, tc.old) {
			t.Fatalf("%s: before Commit, %s holds %d bytes; want what was there (%d bytes)", tc.name, p, len(got), len(tc.old))
		}
		if l, err := d.List(ctx, "/blobs/"+tc.name); tc.old == nil && err == nil {
			t.Errorf("%s: before Commit, a listing shows %v", tc.name, l)
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatalf("%s: Commit: %v", tc.name, err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("%s: Close after Commit: %v", tc.name, err)
		}
		if fi, err := d.Stat(ctx, p); err != nil || fi.Size() != int64(tc.size) {
			t.Fatalf("%s: after Commit, Stat(%s) = %v, %v; want %d bytes", tc.name, p, fi, err, tc.size)
		}
		if got := read(p); !bytes.Equal(got, want) {
			t.Fatalf("%s: after Commit, %s holds %d bytes that differ from the %d written", tc.name, p, len(got), len(want))
		}
	}
}
