package hdfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/colinmarc/hdfs/v2"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// GetContent returns the whole content of the file at p. It is meant for
// small files (links, manifests); blobs are streamed with Reader.
func (d *Driver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if !validPath(p, false) {
		return nil, invalidPath(p)
	}
	var content []byte
	err := d.do("get content", p, func(c *client) error {
		f, err := c.Open(d.full(p))
		if err != nil {
			return err
		}
		defer f.Close()
		if f.Stat().IsDir() {
			return errIsDir
		}
		// The namenode's size of a closed file is exact: read exactly that,
		// without ReadAll's repeated growing.
		content = make([]byte, f.Stat().Size())
		if _, err := io.ReadFull(f, content); err != nil {
			return fmt.Errorf("read %d bytes: %w", len(content), err)
		}
		return nil
	})
	if errors.Is(err, errIsDir) {
		return nil, storage.PathNotFoundError{Path: p, DriverName: DriverName}
	}
	return content, err
}

// errIsDir marks a read of a directory, which the contract reports as a
// missing file.
var errIsDir = errors.New("is a directory")

// Reader streams the file at p from offset on. An offset past the end is an
// InvalidOffsetError; an offset at the end gives an empty stream.
//
// The file's size is fixed when Reader is called: a reader does not see
// bytes appended after it was opened.
func (d *Driver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, storage.InvalidOffsetError{Path: p, Offset: offset, DriverName: DriverName}
	}
	if !validPath(p, false) {
		return nil, invalidPath(p)
	}
	c, err := d.pool.get()
	if err != nil {
		return nil, d.mapErr("read", p, err)
	}
	f, err := c.Open(d.full(p))
	if err != nil {
		d.pool.put(c, err)
		return nil, d.mapErr("read", p, err)
	}
	fail := func(err error) (io.ReadCloser, error) {
		f.Close()
		d.pool.put(c, nil)
		return nil, err
	}
	switch {
	case f.Stat().IsDir():
		return fail(storage.PathNotFoundError{Path: p, DriverName: DriverName})
	case offset > f.Stat().Size():
		// The library's Seek would refuse this too, with an error that the
		// contract does not know.
		return fail(storage.InvalidOffsetError{Path: p, Offset: offset, DriverName: DriverName})
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fail(d.mapErr("seek", p, err))
	}
	return &reader{d: d, c: c, f: f, p: p}, nil
}

// reader maps read errors and returns its client to the pool on Close.
type reader struct {
	d    *Driver
	c    *client
	f    *hdfs.FileReader
	p    string
	err  error // first read error other than io.EOF, tells put whether the client broke
	once sync.Once
}

func (r *reader) Read(b []byte) (int, error) {
	n, err := r.f.Read(b)
	if err != nil && err != io.EOF {
		if r.err == nil {
			r.err = err
		}
		return n, r.d.mapErr("read", r.p, err)
	}
	return n, err
}

func (r *reader) Close() error {
	var err error
	r.once.Do(func() {
		err = r.f.Close()
		r.d.pool.put(r.c, r.err)
	})
	if err != nil {
		return r.d.mapErr("close", r.p, err)
	}
	return nil
}
