package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// TestStagedWriteIsInvisibleUntilCommit: a staged write, of less than a
// block (one Put Blob at Commit) or of several blocks, shows nothing at its
// path or in a listing before Commit, leaves a blob already there as it
// was, then replaces it whole; a cancelled or closed write leaves nothing,
// and a write of the same path after it (its blocks left uncommitted)
// commits its own bytes only.
func TestStagedWriteIsInvisibleUntilCommit(t *testing.T) {
	d := newDriver(t)
	sw, ok := storage.StagedWriterOf(d)
	if !ok {
		t.Fatal("the Azure driver offers no staged writes")
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
	write := func(p string, size int) (storage.FileWriter, []byte) {
		t.Helper()
		data := make([]byte, size)
		_, _ = rand.Read(data)
		w, err := sw.StagedWriter(ctx, p, "/uploads/x")
		if err != nil {
			t.Fatal(err)
		}
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1<<20+7)
			if _, err := w.Write(rest[:n]); err != nil {
				t.Fatalf("writing %s: %v", p, err)
			}
			rest = rest[n:]
		}
		return w, data
	}
	old := []byte("the blob before")
	for _, tc := range []struct {
		name string
		size int
		old  []byte
	}{
		{"small-new", 3000, nil},
		{"blocks-new", 2*stagedBlockSize + 3, nil},
		{"small-over-a-blob", 3000, old},
		{"blocks-over-a-blob", 2*stagedBlockSize + 3, old},
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
			if got := read(p); !bytes.Equal(got, tc.old) {
				t.Fatalf("%s: after %s, %s holds %d bytes; want what was there (%d bytes)", tc.name, end, p, len(got), len(tc.old))
			}
		}
		w, want := write(p, tc.size)
		if got := read(p); !bytes.Equal(got, tc.old) {
			t.Fatalf("%s: before Commit, %s holds %d bytes; want what was there (%d bytes)", tc.name, p, len(got), len(tc.old))
		}
		if l, err := d.List(ctx, "/blobs/"+tc.name); tc.old == nil && err == nil {
			t.Errorf("%s: before Commit, a listing shows %v", tc.name, l)
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatalf("%s: Commit: %v", tc.name, err)
		}
		if got := read(p); !bytes.Equal(got, want) {
			t.Fatalf("%s: after Commit, %s holds %d bytes that differ from the %d written", tc.name, p, len(got), len(want))
		}
	}
}

// TestStagedWriteOverAnAppendBlob: the reference driver's writers write
// append blobs (a blob a Move made from an upload's part is one); a staged
// write of that name leaves it as it is until Commit. Commit then replaces
// it whole where it is one Put Blob, and fails (409 InvalidBlobType),
// leaving it as it was, where it commits a block list.
func TestStagedWriteOverAnAppendBlob(t *testing.T) {
	d := newDriver(t)
	sw, _ := storage.StagedWriterOf(d)
	ctx := context.Background()
	for _, size := range []int{3000, stagedBlockSize + 5} {
		old := []byte("an append blob")
		w, err := d.Writer(ctx, "/blobs/appended/data", false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(old); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		want := make([]byte, size)
		_, _ = rand.Read(want)
		st, err := sw.StagedWriter(ctx, "/blobs/appended/data", "/uploads/x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write(want); err != nil {
			t.Fatalf("staging %d bytes over an append blob: %v", size, err)
		}
		if got, err := d.GetContent(ctx, "/blobs/appended/data"); err != nil || !bytes.Equal(got, old) {
			t.Fatalf("before Commit, the append blob reads %d bytes (err %v), want its own %d", len(got), err, len(old))
		}
		err = st.Commit(ctx)
		if size >= stagedBlockSize {
			want = old
			if err == nil {
				t.Errorf("a block list of %d bytes was committed over an append blob", size)
			}
		} else if err != nil {
			t.Fatalf("committing %d bytes over an append blob in one Put Blob: %v", size, err)
		}
		if got, err := d.GetContent(ctx, "/blobs/appended/data"); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("after Commit of %d bytes, the blob reads %d bytes (err %v), want %d", size, len(got), err, len(want))
		}
		if err := d.Delete(ctx, "/blobs/appended/data"); err != nil {
			t.Fatal(err)
		}
	}
}
