package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
)

// ReadDirFunc returns the children of directory dir with their FileInfo, in
// any order. A dir that does not exist, or is a file, is a
// PathNotFoundError for dir.
type ReadDirFunc func(ctx context.Context, dir string) ([]FileInfo, error)

// WalkDir implements Driver.Walk for a driver that can list a directory
// together with its entries' FileInfo in one call (a readdir, one HDFS
// GetListing), where WalkFallback needs a List plus a Stat per entry.
//
// It visits what WalkFallback visits, in the same order: depth first, each
// directory's children in lexical order. f returning ErrSkipDir for a
// directory skips its contents; ErrFilledBuffer ends the walk without error;
// any other error ends it and is returned. With a StartAfterHint only what
// comes after the hint in walk order is visited. Unlike the fallback,
// ErrFilledBuffer also ends a walk that has a hint, a hint with a trailing
// slash means the same as without it, and a directory that disappears while
// being walked is skipped rather than ending its level.
func WalkDir(ctx context.Context, from string, readDir ReadDirFunc, f WalkFn, options ...func(*WalkOptions)) error {
	var opts WalkOptions
	for _, o := range options {
		o(&opts)
	}
	hint := opts.StartAfterHint
	if strings.HasPrefix(hint, "/") {
		hint = path.Clean(hint)
	}
	w := walker{readDir: readDir, f: f}

	if hint != from && !strings.HasPrefix(hint, strings.TrimSuffix(from, "/")+"/") {
		// The hint is outside from: either all of from comes after it,
		// or none of it does. Comparing with "/" as the lowest byte
		// orders paths the way a depth-first walk visits them.
		if strings.ReplaceAll(hint, "/", "\x00") < strings.ReplaceAll(from, "/", "\x00") {
			_, err := w.walk(ctx, from, "")
			return err
		}
		return nil
	}

	// The hint is inside from. Resume in the hint's own directory, then
	// climb: in each ancestor, continue after the child just finished.
	base := hint
	for {
		more, err := w.walk(ctx, base, hint)
		var notFound PathNotFoundError
		if err != nil && !errors.As(err, &notFound) {
			return err
		}
		if err == nil && !more {
			return nil
		}
		if base == from {
			return nil
		}
		hint = base
		base = path.Dir(base)
	}
}

type walker struct {
	readDir ReadDirFunc
	f       WalkFn
}

// walk visits the children of dir that sort after hint, and their
// descendants. It returns false when f asked to stop.
func (w walker) walk(ctx context.Context, dir, hint string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("walking %s: %w", dir, err)
	}
	children, err := w.readDir(ctx, dir)
	if err != nil {
		return false, err
	}
	slices.SortFunc(children, func(a, b FileInfo) int { return cmp.Compare(a.Path(), b.Path()) })
	for _, fi := range children {
		if fi.Path() <= hint {
			continue
		}
		switch err := w.f(fi); {
		case err == nil && fi.IsDir():
			more, err := w.walk(ctx, fi.Path(), hint)
			var notFound PathNotFoundError
			if errors.As(err, &notFound) && notFound.Path == fi.Path() {
				continue // removed since it was listed
			}
			if err != nil || !more {
				return more, err
			}
		case err == nil, errors.Is(err, ErrSkipDir):
		case errors.Is(err, ErrFilledBuffer):
			return false, nil
		default:
			return false, err
		}
	}
	return true, nil
}
