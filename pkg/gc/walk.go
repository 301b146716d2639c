package gc

import (
	"context"
	"fmt"
	"sort"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// walkFiles calls fn for every file under root. Pushes and deletions go on
// while GC walks, and a driver's Walk fails when a directory it listed
// disappears before it is entered; that aborts a run that would have been
// correct, since a vanished link is one GC may miss. So a failed Walk is
// retried with a walk that skips whatever vanished; it still visits every
// file that exists from start to end, which is all marking needs.
func walkFiles(ctx context.Context, drv storage.Driver, root string, fn func(storage.FileInfo) error) error {
	var fnErr error
	err := drv.Walk(ctx, root, func(fi storage.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		if err := fn(fi); err != nil {
			fnErr = err
			return err
		}
		return nil
	})
	switch {
	case err == nil:
		return nil
	case fnErr != nil:
		return fnErr
	case !isNotFound(err):
		return fmt.Errorf("walking %s: %w", root, err)
	}
	// The driver's walk stopped part way; fn must tolerate seeing files
	// twice, which the callers do since they fill maps.
	return walkTolerant(ctx, drv, root, fn)
}

func walkTolerant(ctx context.Context, drv storage.Driver, dir string, fn func(storage.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	children, err := drv.List(ctx, dir)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	sort.Strings(children)
	for _, c := range children {
		fi, err := drv.Stat(ctx, c)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return fmt.Errorf("stat %s: %w", c, err)
		}
		if fi.IsDir() {
			err = walkTolerant(ctx, drv, c, fn)
		} else {
			err = fn(fi)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
