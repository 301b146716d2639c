package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/stagedtest"
)

// TestStagedWriteIsInvisibleUntilCommit: blocks of stagedBlockSize
// (stagedtest.InvisibleUntilCommit says what it checks).
func TestStagedWriteIsInvisibleUntilCommit(t *testing.T) {
	stagedtest.InvisibleUntilCommit(t, newDriver(t), stagedBlockSize)
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
