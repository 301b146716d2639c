package hdfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	"github.com/colinmarc/hdfs/v2"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// PutContent stores content at p atomically: it writes a temporary file and
// renames it over p, so a reader sees the old content or the new, never a
// part, and a crash leaves p as it was.
func (d *Driver) PutContent(ctx context.Context, p string, content []byte) error {
	if !validPath(p, false) {
		return invalidPath(p)
	}
	return d.do("put content", p, func(c *client) error {
		tmp := d.tmpName()
		if err := d.writeFile(c, tmp, content); err != nil {
			_ = c.Remove(tmp)
			return err
		}
		if err := rename(c, tmp, d.full(p)); err != nil {
			_ = c.Remove(tmp)
			return err
		}
		return nil
	})
}

func (d *Driver) writeFile(c *client, name string, content []byte) error {
	w, err := create(c, name)
	if errors.Is(err, os.ErrNotExist) {
		// Someone removed the temporary directory (a cleanup of the root).
		if err := c.MkdirAll(path.Dir(name), 0o755); err != nil {
			return err
		}
		w, err = create(c, name)
	}
	if err != nil {
		return err
	}
	// The library starts a block on the first Write even when it is empty,
	// and a block that no byte reached is never reported by a datanode: the
	// file could then never be completed. An empty file has no block.
	if len(content) > 0 {
		if _, err := w.Write(content); err != nil {
			_ = w.Close()
			return err
		}
	}
	return closeFile(w)
}

// create creates a new file with the namenode's default replication and
// block size. Unlike Client.Create it does not ask the namenode first
// whether the file exists: the namenode refuses to create an existing file
// anyway, and the question costs a call per file.
func create(c *client, name string) (*hdfs.FileWriter, error) {
	return c.CreateFile(name, c.defaults.Replication, c.defaults.BlockSize, 0o644)
}

// Close-retry budget. The namenode completes a file only once its last block
// has the minimum number of replicas reported by the datanodes, which lags
// the write by a heartbeat or an incremental block report; the Java client
// retries the same way (5 attempts from 400 ms, doubling). This allows ~15 s.
const (
	closeAttempts   = 12
	closeFirstDelay = 50 * time.Millisecond
	closeMaxDelay   = 2 * time.Second
)

// closeFile closes an HDFS file, retrying while the namenode answers that
// replication is in progress: all data is on the datanodes by then, and
// another Close only asks the namenode to complete the file again.
func closeFile(w io.Closer) error { return closeRetrying(w, closeFirstDelay) }

func closeRetrying(w io.Closer, delay time.Duration) error {
	for i := 1; ; i++ {
		err := w.Close()
		if err == nil || !hdfs.IsErrReplicating(err) || i == closeAttempts {
			return err
		}
		time.Sleep(delay)
		delay = min(2*delay, closeMaxDelay)
	}
}

// Writer returns a writer to the file at p. With append false it replaces
// any existing file; with append true it continues the file (creating it if
// missing), as an upload session does across requests and origin nodes.
//
// HDFS lets one client at a time write a file (its lease). A writer that died
// without closing keeps the lease until the namenode's soft limit (60 s)
// expires, and appending to that file fails meanwhile. The origin never
// appends to a file that another process may still hold: each upload part
// goes to a new file.
func (d *Driver) Writer(ctx context.Context, p string, append bool) (storage.FileWriter, error) {
	if !validPath(p, false) {
		return nil, invalidPath(p)
	}
	c, err := d.pool.get()
	if err != nil {
		return nil, d.mapErr("write", p, err)
	}
	full := d.full(p)
	var (
		w    *hdfs.FileWriter
		size int64
	)
	if append {
		w, size, err = appendFile(c, full)
	} else {
		w, err = replaceFile(c, full)
	}
	if err != nil {
		d.pool.put(c, err)
		return nil, d.mapErr("write", p, leaseError(err))
	}
	return &fileWriter{d: d, c: c, w: w, p: p, full: full, size: size}, nil
}

// replaceFile creates full, removing an existing file and creating missing
// parent directories only when the namenode says they are in the way.
func replaceFile(c *client, full string) (*hdfs.FileWriter, error) {
	w, err := create(c, full)
	switch {
	case errors.Is(err, os.ErrExist):
		if err := c.Remove(full); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return create(c, full)
	case errors.Is(err, os.ErrNotExist):
		if err := c.MkdirAll(path.Dir(full), 0o755); err != nil {
			return nil, err
		}
		return create(c, full)
	}
	return w, err
}

// leaseError explains the namenode's refusal to open a file that another
// client holds open, which its exception name alone does not.
func leaseError(err error) error {
	var rerr hdfs.Error
	if errors.As(err, &rerr) && rerr.Exception() == "org.apache.hadoop.hdfs.protocol.AlreadyBeingCreatedException" {
		return fmt.Errorf("file is held open by another HDFS client (its lease expires 60 s after that client stopped): %w", err)
	}
	return err
}

// fileWriter adapts hdfs.FileWriter to the contract: Size, Commit, Cancel,
// and errors mapped.
type fileWriter struct {
	d    *Driver
	c    *client
	w    *hdfs.FileWriter
	p    string
	full string
	size int64
	err  error // first error, tells the pool whether the client broke

	closed, committed, cancelled bool
}

func (fw *fileWriter) Write(b []byte) (int, error) {
	switch {
	case fw.closed:
		return 0, fmt.Errorf("hdfs write %s: writer already closed", fw.p)
	case fw.committed:
		return 0, fmt.Errorf("hdfs write %s: writer already committed", fw.p)
	case fw.cancelled:
		return 0, fmt.Errorf("hdfs write %s: writer already cancelled", fw.p)
	}
	if len(b) == 0 {
		// See writeFile: an empty Write would start a block that can
		// never be completed.
		return 0, nil
	}
	n, err := fw.w.Write(b)
	fw.size += int64(n)
	if err != nil {
		fw.fail(err)
		return n, fw.d.mapErr("write", fw.p, err)
	}
	return n, nil
}

func (fw *fileWriter) Size() int64 { return fw.size }

// Close closes the HDFS file, so that another writer (on this node or
// another) can append to it. Content written so far stays.
func (fw *fileWriter) Close() error {
	if fw.closed {
		return fmt.Errorf("hdfs close %s: writer already closed", fw.p)
	}
	fw.closed = true
	var err error
	if !fw.committed && !fw.cancelled {
		err = closeFile(fw.w)
		fw.fail(err)
	}
	if fw.err != nil && !fw.cancelled {
		fw.d.pool.discard(fw.c)
	} else {
		fw.d.pool.put(fw.c, fw.err)
	}
	return fw.d.mapErr("close", fw.p, err)
}

// Commit flushes and closes the HDFS file: its content is then complete and
// readable at its full size.
func (fw *fileWriter) Commit(ctx context.Context) error {
	switch {
	case fw.closed:
		return fmt.Errorf("hdfs commit %s: writer already closed", fw.p)
	case fw.committed:
		return fmt.Errorf("hdfs commit %s: writer already committed", fw.p)
	case fw.cancelled:
		return fmt.Errorf("hdfs commit %s: writer already cancelled", fw.p)
	}
	fw.committed = true
	err := closeFile(fw.w)
	fw.fail(err)
	return fw.d.mapErr("commit", fw.p, err)
}

// Cancel closes the HDFS file and removes it.
func (fw *fileWriter) Cancel(ctx context.Context) error {
	switch {
	case fw.closed:
		return fmt.Errorf("hdfs cancel %s: writer already closed", fw.p)
	case fw.committed:
		return fmt.Errorf("hdfs cancel %s: writer already committed", fw.p)
	case fw.cancelled:
		return nil
	}
	fw.cancelled = true
	// The close only releases the lease: the file is removed either way.
	_ = closeFile(fw.w)
	err := fw.c.Remove(fw.full)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	fw.fail(err)
	return fw.d.mapErr("cancel", fw.p, err)
}

func (fw *fileWriter) fail(err error) {
	if fw.err == nil {
		fw.err = err
	}
}
