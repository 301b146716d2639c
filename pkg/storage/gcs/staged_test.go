package gcs

import (
	"context"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/stagedtest"
)

// TestStagedWriteIsInvisibleUntilCommit: the test driver's 1 MiB chunks
// make a write of 2 MiB send two of them before Commit
// (stagedtest.InvisibleUntilCommit says what it checks). The driver keeps
// its conditional writes beside the staged ones.
func TestStagedWriteIsInvisibleUntilCommit(t *testing.T) {
	d := newDriverAt(t, store.FreshURL(t))
	if _, ok := storage.ConditionalWriterOf(d); !ok {
		t.Fatal("the GCS driver with staged writes lost its conditional writes")
	}
	stagedtest.InvisibleUntilCommit(t, d, 1<<20)
}

// TestStagedWriteRefusesBadPaths: the path and the stage are checked as
// every other call's are.
func TestStagedWriteRefusesBadPaths(t *testing.T) {
	d := newDriverAt(t, store.FreshURL(t))
	sw, _ := storage.StagedWriterOf(d)
	ctx := context.Background()
	for _, c := range [][2]string{{"no-slash", "/uploads/x"}, {"/blobs/a", "stage"}, {"/blobs/../a", "/uploads/x"}} {
		if w, err := sw.StagedWriter(ctx, c[0], c[1]); err == nil {
			_ = w.Cancel(ctx)
			t.Errorf("StagedWriter(%q, %q) succeeded", c[0], c[1])
		}
	}
}
