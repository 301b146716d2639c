package filesystem

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// TestRootGoneIsAnOutageNotMissingContent: with the root replaced by a
// file (a failed mount) or gone, reads fail with an error instead of
// PathNotFoundError, so that the origin answers 503 rather than telling
// clients that their blobs and uploads do not exist. Once the root is back,
// missing content is missing again.
func TestRootGoneIsAnOutageNotMissingContent(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "root")
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PutContent(ctx, "/a/b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(root, root+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	for what, call := range map[string]func() error{
		"GetContent": func() error { _, err := d.GetContent(ctx, "/a/b"); return err },
		"Stat":       func() error { _, err := d.Stat(ctx, "/a/b"); return err },
		"List":       func() error { _, err := d.List(ctx, "/a"); return err },
		"Reader":     func() error { _, err := d.Reader(ctx, "/a/b", 0); return err },
	} {
		err := call()
		var nf storage.PathNotFoundError
		if err == nil || errors.As(err, &nf) {
			t.Errorf("%s with the root replaced by a file: %v, want an error that is not PathNotFoundError", what, err)
		}
	}

	if err := os.Remove(root); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(root+".away", root); err != nil {
		t.Fatal(err)
	}
	var nf storage.PathNotFoundError
	if _, err := d.Stat(ctx, "/a/missing"); !errors.As(err, &nf) {
		t.Errorf("Stat of missing content with the root back: %v, want PathNotFoundError", err)
	}
	if b, err := d.GetContent(ctx, "/a/b"); err != nil || string(b) != "x" {
		t.Errorf("GetContent with the root back: %q, %v", b, err)
	}
}
