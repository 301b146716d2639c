package hdfs

import (
	"context"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// Stat describes the file or directory at p. For a file still open for
// writing it reports the length the namenode knows, which leaves out the
// block being written: the size is exact once the writer is closed.
func (d *Driver) Stat(ctx context.Context, p string) (storage.FileInfo, error) {
	if !validPath(p, true) {
		return nil, invalidPath(p)
	}
	var fi storage.FileInfo
	err := d.do("stat", p, func(c *client) error {
		info, err := c.Stat(d.full(p))
		if err != nil {
			return err
		}
		fields := storage.FileInfoFields{Path: p, ModTime: info.ModTime(), IsDir: info.IsDir()}
		if !info.IsDir() {
			fields.Size = info.Size()
		}
		fi = storage.FileInfoInternal{FileInfoFields: fields}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return fi, nil
}
