package storage_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
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

func buildWalkTree(t *testing.T) storage.Driver {
	t.Helper()
	d := inmemory.New()
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

func noop(storage.FileInfo) error { return nil }

// TestWalkDirMatchesFallback holds WalkDir to the reference WalkFallback
// over the same driver, for every start and every hint in and around the
// tree, and for functions that skip, stop and fail.
func TestWalkDirMatchesFallback(t *testing.T) {
	ctx := context.Background()
	d := buildWalkTree(t)

	var all []string
	if err := storage.WalkFallback(ctx, d, "/", func(fi storage.FileInfo) error {
		all = append(all, fi.Path())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(all) != 19 {
		t.Fatalf("the fallback walked %d entries of the test tree, want 19: %q", len(all), all)
	}
	froms := []string{"/"}
	hints := []string{"", "/", "/0", "/zzz", "/folder3/nothere/x", "/folder3/subfolder1/zzz", "relative"}
	for _, p := range all {
		hints = append(hints, p)
		if fi, err := d.Stat(ctx, p); err == nil && fi.IsDir() {
			froms = append(froms, p)
		}
	}
	froms = append(froms, "/nothere", "/file1")

	errBoom := errors.New("boom")
	fns := map[string]storage.WalkFn{
		"noop": noop,
		"skip /folder3": func(fi storage.FileInfo) error {
			if fi.Path() == "/folder3" {
				return storage.ErrSkipDir
			}
			return nil
		},
		"skip on a file": func(fi storage.FileInfo) error {
			if fi.Path() == "/file1" {
				return storage.ErrSkipDir
			}
			return nil
		},
		"fail at /folder2/file1": func(fi storage.FileInfo) error {
			if fi.Path() == "/folder2/file1" {
				return errBoom
			}
			return nil
		},
	}
	readDir := func(ctx context.Context, dir string) ([]storage.FileInfo, error) {
		keys, err := d.List(ctx, dir)
		if err != nil {
			return nil, err
		}
		var infos []storage.FileInfo
		for _, k := range slices.Backward(keys) { // any order will do
			fi, err := d.Stat(ctx, k)
			if err != nil {
				return nil, err
			}
			infos = append(infos, fi)
		}
		return infos, nil
	}
	for fnName, fn := range fns {
		for _, from := range froms {
			for _, hint := range hints {
				opt := driver.WithStartAfterHint(hint)
				got := collect(func(f storage.WalkFn) error { return storage.WalkDir(ctx, from, readDir, f, opt) }, fn)
				want := collect(func(f storage.WalkFn) error { return storage.WalkFallback(ctx, d, from, f, opt) }, fn)
				if !slices.Equal(got.paths, want.paths) || !errors.Is(got.err, want.err) {
					t.Errorf("%s from %q after %q:\n got  %q, err %v\n want %q, err %v", fnName, from, hint, got.paths, got.err, want.paths, want.err)
				}
			}
		}
	}
}

func TestWalkFilledBufferStops(t *testing.T) {
	d := buildWalkTree(t)
	for _, hint := range []string{"", "/folder3/subfolder1/subfolder1/file1"} {
		var visited []string
		err := d.Walk(context.Background(), "/", func(fi storage.FileInfo) error {
			visited = append(visited, fi.Path())
			if len(visited) == 2 {
				return storage.ErrFilledBuffer
			}
			return nil
		}, driver.WithStartAfterHint(hint))
		if err != nil {
			t.Fatal(err)
		}
		// The fallback, with a hint, goes on walking the hint's
		// ancestors after ErrFilledBuffer.
		if len(visited) != 2 {
			t.Errorf("after %q: visited %q after asking to stop at the second", hint, visited)
		}
	}
}

func TestWalkHintWithTrailingSlashMeansTheDirectory(t *testing.T) {
	ctx := context.Background()
	d := buildWalkTree(t)
	got := collect(func(fn storage.WalkFn) error {
		return d.Walk(ctx, "/", fn, driver.WithStartAfterHint("/folder1/"))
	}, noop)
	want := collect(func(fn storage.WalkFn) error {
		return storage.WalkFallback(ctx, d, "/", fn, driver.WithStartAfterHint("/folder1"))
	}, noop)
	if !slices.Equal(got.paths, want.paths) || got.err != nil {
		t.Errorf("after /folder1/ walked %q, err %v; want what after /folder1 walks: %q", got.paths, got.err, want.paths)
	}
}

func TestWalkSkipsDirectoryRemovedWhileWalking(t *testing.T) {
	ctx := context.Background()
	d := buildWalkTree(t)
	var visited []string
	err := d.Walk(ctx, "/", func(fi storage.FileInfo) error {
		visited = append(visited, fi.Path())
		if fi.Path() == "/folder2" {
			// Another process removes it between its listing and its walk.
			return d.Delete(ctx, "/folder2")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk failed when a directory was removed during it: %v", err)
	}
	if slices.Contains(visited, "/folder2/file1") || !slices.Contains(visited, "/folder4/file1") {
		t.Errorf("visited %q: want /folder2 skipped and the walk to go on to /folder4", visited)
	}
}

func TestWalkHonoursCancellation(t *testing.T) {
	d := buildWalkTree(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Walk(ctx, "/", noop); !errors.Is(err, context.Canceled) {
		t.Errorf("Walk with a cancelled context returned %v, want context.Canceled", err)
	}
}
