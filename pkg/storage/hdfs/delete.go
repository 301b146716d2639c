package hdfs

import (
	"context"
)

// Delete removes the file or directory tree at p.
func (d *Driver) Delete(ctx context.Context, p string) error {
	if !validPath(p, false) {
		return invalidPath(p)
	}
	return d.do("delete", p, func(c *client) error {
		full := d.full(p)
		// RemoveAll succeeds on a missing path, the contract wants
		// PathNotFoundError: ask first (a race with another delete then
		// reports success, which is what the caller wanted).
		if _, err := c.Stat(full); err != nil {
			return err
		}
		return c.RemoveAll(full)
	})
}
