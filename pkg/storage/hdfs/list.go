package hdfs

import (
	"context"
	"os"
	"path"
)

// List returns the paths of the direct children of the directory p. A path
// that is missing or is a file is a PathNotFoundError.
func (d *Driver) List(ctx context.Context, p string) ([]string, error) {
	if !validPath(p, true) {
		return nil, invalidPath(p)
	}
	var names []string
	err := d.do("list", p, func(c *client) error {
		entries, err := d.readDir(c, p)
		if err != nil {
			return err
		}
		names = make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, path.Join(p, e.Name()))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

// readDir lists the directory at storage path p in HDFS's (byte-wise sorted)
// order, without the driver's temporary directory. A file is reported as
// os.ErrNotExist: the contract has no "not a directory".
func (d *Driver) readDir(c *client, p string) ([]os.FileInfo, error) {
	f, err := c.Open(d.full(p))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if !f.Stat().IsDir() {
		return nil, os.ErrNotExist
	}
	entries, err := f.Readdir(0)
	if err != nil {
		return nil, err
	}
	if p == "/" {
		for i, e := range entries {
			if e.Name() == tmpDirName {
				entries = append(entries[:i], entries[i+1:]...)
				break
			}
		}
	}
	return entries, nil
}
