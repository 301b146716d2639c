package filesystem

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// Walk calls f for everything under from, depth first in lexical order, as
// storage.WalkFallback would (the tests hold it to that), but reading each
// directory once instead of a List plus a Stat per entry. See
// storage.WalkDir for how f steers it.
func (d *Driver) Walk(ctx context.Context, from string, f storage.WalkFn, options ...func(*storage.WalkOptions)) error {
	if err := checkPath(from, true); err != nil {
		return err
	}
	return storage.WalkDir(ctx, from, d.readDirInfo, f, options...)
}

// readDirInfo lists directory dir with the FileInfo of each entry.
func (d *Driver) readDirInfo(_ context.Context, dir string) ([]storage.FileInfo, error) {
	entries, err := d.readDir(dir)
	if err != nil {
		return nil, err
	}
	infos := make([]storage.FileInfo, 0, len(entries))
	for _, e := range entries {
		child := path.Join(dir, e.Name())
		var info fs.FileInfo
		if e.Type()&fs.ModeSymlink != 0 {
			// As Stat does: a link is what it points to.
			info, err = os.Stat(d.fullPath(child))
		} else {
			info, err = e.Info()
		}
		if d.notExist(err) {
			continue // removed since the directory was read
		}
		if err != nil {
			return nil, fmt.Errorf("%s: stat of %s: %w", driverName, child, err)
		}
		infos = append(infos, fileInfo(child, info))
	}
	return infos, nil
}
