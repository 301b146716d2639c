package hdfs

import (
	"context"
	"errors"
	"os"
	"path"
	"strings"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// Walk calls f for every file and directory under from, depth first, in
// lexical order, with the semantics of storage.WalkFallback (ErrSkipDir,
// ErrFilledBuffer, StartAfterHint) but one listing per directory: the
// listing carries sizes and times, so there is no Stat per entry.
func (d *Driver) Walk(ctx context.Context, from string, f storage.WalkFn, options ...func(*storage.WalkOptions)) error {
	if !validPath(from, true) {
		return invalidPath(from)
	}
	var opts storage.WalkOptions
	for _, o := range options {
		o(&opts)
	}
	hint := opts.StartAfterHint
	if hint != "" && !strings.HasPrefix(hint, strings.TrimSuffix(from, "/")+"/") {
		// A hint outside from: everything under from is either before the
		// hint in walk order (nothing to do) or after it (walk it all).
		// Comparing with "/" as the lowest byte orders paths the way a
		// depth-first walk visits them.
		if hint != from && strings.ReplaceAll(hint, "/", "\x00") > strings.ReplaceAll(from, "/", "\x00") {
			return nil
		}
		hint = ""
	}
	c, err := d.pool.get()
	if err != nil {
		return d.mapErr("walk", from, err)
	}
	w := walker{d: d, c: c, ctx: ctx, f: f}
	_, err = w.walk(from, hint, true)
	d.pool.put(c, err)
	if err == nil || errors.Is(err, errWalkUser) {
		return w.userErr
	}
	return d.mapErr("walk", w.at, err)
}

// errWalkUser marks an error returned by the WalkFn, which Walk returns as
// is rather than as an HDFS error.
var errWalkUser = errors.New("walk function failed")

type walker struct {
	d       *Driver
	c       *client
	ctx     context.Context
	f       storage.WalkFn
	at      string // directory being listed, for error messages
	userErr error
}

// walk visits the children of dir. hint, when not empty, is a path strictly
// under dir: entries up to it in walk order are skipped. top is set for the
// directory Walk was called on. It returns false when the walk must stop
// (ErrFilledBuffer).
func (w *walker) walk(dir, hint string, top bool) (bool, error) {
	if err := w.ctx.Err(); err != nil {
		return false, err
	}
	w.at = dir
	entries, err := w.d.readDir(w.c, dir)
	if err != nil {
		if (!top || hint != "") && errors.Is(err, os.ErrNotExist) {
			// Removed between its parent's listing and now (a concurrent
			// delete), or the start of a resumed walk that is gone: as
			// WalkFallback, there is nothing left to visit.
			return true, nil
		}
		return false, err
	}
	// The name of hint's component directly under dir.
	var hintName, hintRest string
	if hint != "" {
		rel := strings.TrimPrefix(hint, strings.TrimSuffix(dir, "/")+"/")
		hintName, hintRest, _ = strings.Cut(rel, "/")
	}
	for _, e := range entries {
		name := e.Name()
		child := path.Join(dir, name)
		if hint != "" {
			if name < hintName {
				continue
			}
			if name == hintName {
				// The hint or one of its ancestors: it was visited before
				// the hint, but what lies inside it may come after. As in
				// WalkFallback, everything under the hint itself does
				// (it sorts after it), and inside an ancestor, what
				// follows the hint.
				if e.IsDir() {
					sub := hint
					if hintRest == "" {
						sub = ""
					}
					if ok, err := w.walk(child, sub, false); err != nil || !ok {
						return ok, err
					}
				}
				continue
			}
		}
		fields := storage.FileInfoFields{Path: child, ModTime: e.ModTime(), IsDir: e.IsDir()}
		if !e.IsDir() {
			fields.Size = e.Size()
		}
		err := w.f(storage.FileInfoInternal{FileInfoFields: fields})
		switch {
		case err == nil:
			if e.IsDir() {
				if ok, err := w.walk(child, "", false); err != nil || !ok {
					return ok, err
				}
			}
		case errors.Is(err, storage.ErrSkipDir):
		case errors.Is(err, storage.ErrFilledBuffer):
			return false, nil
		default:
			w.userErr = err
			return false, errWalkUser
		}
	}
	return true, nil
}
