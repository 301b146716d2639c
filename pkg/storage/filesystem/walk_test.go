package filesystem

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// walkTree has names where a byte-wise sort of full paths and a depth-first
// walk disagree ("-" and "." sort before "/").
var walkTree = []string{
	"/file1",
	"/folder1/file1",
	"/folder1-suffix/file1",
	"/folder1.x/file1",
	"/folder2/file1",
	"/folder3/subfolder1/subfolder1/file1",
	"/folder3/subfolder2/subfolder1/file1",
	"/folder3/subfolder2/file2",
	"/folder4/file1",
}

func buildWalkTree(t *testing.T) *Driver {
	t.Helper()
	d, _ := newDriver(t)
	for _, p := range walkTree {
		if err := d.PutContent(context.Background(), p, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

type walkResult struct {
	paths []string
	err   error
}

func collect(walk func(storage.WalkFn) error, fn storage.WalkFn) walkResult {
	var r walkResult
	r.err = walk(func(fi storage.FileInfo) error {
		r.paths = append(r.paths, fmt.Sprintf("%s dir=%t size=%d", fi.Path(), fi.IsDir(), fi.Size()))
		return fn(fi)
	})
	return r
}

// TestWalkMatchesFallback holds the native Walk to the reference
// WalkFallback over the same driver, for every start and every hint in and
// around the tree.
func TestWalkMatchesFallback(t *testing.T) {
	ctx := context.Background()
	d := buildWalkTree(t)

	var all []string
	if err := storage.WalkFallback(ctx, d, "/", func(fi storage.FileInfo) error {
		all = append(all, fi.Path())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	froms := []string{"/"}
	hints := []string{"", "/", "/0", "/zzz", "/folder3/nothere/x", "/folder3/subfolder1/zzz"}
	for _, p := range all {
		hints = append(hints, p)
		if fi, err := d.Stat(ctx, p); err == nil && fi.IsDir() {
			froms = append(froms, p)
		}
	}
	froms = append(froms, "/nothere", "/file1")

	noop := func(storage.FileInfo) error { return nil }
	for _, from := range froms {
		for _, hint := range hints {
			opt := driver.WithStartAfterHint(hint)
			got := collect(func(fn storage.WalkFn) error { return d.Walk(ctx, from, fn, opt) }, noop)
			want := collect(func(fn storage.WalkFn) error { return storage.WalkFallback(ctx, d, from, fn, opt) }, noop)
			if !slices.Equal(got.paths, want.paths) || (got.err == nil) != (want.err == nil) {
				t.Errorf("Walk(%q, hint %q):\n got  %q, err %v\n want %q, err %v", from, hint, got.paths, got.err, want.paths, want.err)
			}
		}
	}
}

func TestWalkSkipDirAndStop(t *testing.T) {
	ctx := context.Background()
	d := buildWalkTree(t)
	errBoom := errors.New("boom")
	cases := []struct {
		name string
		fn   storage.WalkFn
	}{
		{"skip a directory", func(fi storage.FileInfo) error {
			if fi.Path() == "/folder3" {
				return storage.ErrSkipDir
			}
			return nil
		}},
		{"skip on a file is ignored", func(fi storage.FileInfo) error {
			if fi.Path() == "/file1" {
				return storage.ErrSkipDir
			}
			return nil
		}},
		{"filled buffer stops", func(fi storage.FileInfo) error {
			if fi.Path() == "/folder3/subfolder1" {
				return storage.ErrFilledBuffer
			}
			return nil
		}},
		{"error stops and is returned", func(fi storage.FileInfo) error {
			if fi.Path() == "/folder2/file1" {
				return errBoom
			}
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := collect(func(fn storage.WalkFn) error { return d.Walk(ctx, "/", fn) }, tc.fn)
			want := collect(func(fn storage.WalkFn) error { return storage.WalkFallback(ctx, d, "/", fn) }, tc.fn)
			if !slices.Equal(got.paths, want.paths) || !errors.Is(got.err, want.err) {
				t.Errorf("got %q, err %v\nwant %q, err %v", got.paths, got.err, want.paths, want.err)
			}
		})
	}
}
