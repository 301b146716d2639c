package hdfs

import (
	"context"
	"errors"
	"os"
	"path"
)

// Move renames src to dst, replacing dst if it exists, in one namenode
// operation: readers see either the old or the new content of dst.
func (d *Driver) Move(ctx context.Context, src, dst string) error {
	if !validPath(src, false) {
		return invalidPath(src)
	}
	if !validPath(dst, false) {
		return invalidPath(dst)
	}
	return d.do("move", src, func(c *client) error {
		return rename(c, d.full(src), d.full(dst))
	})
}

// rename moves the HDFS path src to dst with overwrite. HDFS refuses a
// destination whose parent is missing and reports it like a missing source;
// rather than create the parent before every rename (one more namenode call
// for the common case where it exists), rename tries first and only then
// tells the two apart.
func rename(c *client, src, dst string) error {
	err := c.Rename(src, dst)
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if _, err := c.Stat(src); err != nil {
		return err
	}
	if err := c.MkdirAll(path.Dir(dst), 0o755); err != nil {
		return err
	}
	return c.Rename(src, dst)
}
