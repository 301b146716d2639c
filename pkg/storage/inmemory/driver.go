// Package inmemory is a storage driver that keeps everything in a tree in
// process memory. It exists for tests: it is fast, needs no cleanup and
// behaves like the filesystem driver (directories are implicit parents of
// files and stay behind when their files are deleted), so code tested against
// it behaves the same on disk.
package inmemory

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/pkg/storage"
)

const driverName = "inmemory"

// Driver is an in-memory storage.Driver, safe for concurrent use. Every
// Driver is its own empty store.
type Driver struct {
	mu   sync.RWMutex
	root *node
}

var _ storage.Driver = (*Driver)(nil)

// node is a file or a directory.
type node struct {
	isDir    bool
	children map[string]*node
	data     content
	mod      time.Time
}

func newDir() *node {
	return &node{isDir: true, children: make(map[string]*node), mod: time.Now()}
}

// New returns an empty in-memory driver.
func New() *Driver {
	return &Driver{root: newDir()}
}

// Name returns "inmemory".
func (d *Driver) Name() string { return driverName }

// checkPath enforces the reference path grammar, and also rejects "." and
// ".." components, which the grammar allows but which would make one
// file reachable under several names.
func checkPath(p string, rootAllowed bool) error {
	if rootAllowed && p == "/" {
		return nil
	}
	if !storage.PathRegexp.MatchString(p) {
		return storage.InvalidPathError{Path: p, DriverName: driverName}
	}
	for c := range strings.SplitSeq(p[1:], "/") {
		if c == "." || c == ".." {
			return storage.InvalidPathError{Path: p, DriverName: driverName}
		}
	}
	return nil
}

func components(p string) []string {
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

// lookup returns the node at p, or nil when there is none (including when a
// parent of p is a file). The caller holds d.mu.
func (d *Driver) lookup(p string) *node {
	n := d.root
	for _, c := range components(p) {
		if !n.isDir {
			return nil
		}
		n = n.children[c]
		if n == nil {
			return nil
		}
	}
	return n
}

// mkdirs returns the directory at p, creating missing directories on the
// way. The caller holds d.mu for writing.
func (d *Driver) mkdirs(p string) (*node, error) {
	n := d.root
	walked := ""
	for _, c := range components(p) {
		walked += "/" + c
		child := n.children[c]
		if child == nil {
			child = newDir()
			n.children[c] = child
			n.mod = child.mod
		} else if !child.isDir {
			return nil, fmt.Errorf("%s: %s is a file, not a directory", driverName, walked)
		}
		n = child
	}
	return n, nil
}

// mkfile returns the file at p, creating it and its parents if needed. The
// caller holds d.mu for writing.
func (d *Driver) mkfile(p string) (*node, error) {
	parent, err := d.mkdirs(path.Dir(p))
	if err != nil {
		return nil, fmt.Errorf("creating parents of %s: %w", p, err)
	}
	name := path.Base(p)
	f := parent.children[name]
	if f == nil {
		f = &node{mod: time.Now()}
		parent.children[name] = f
		parent.mod = f.mod
		return f, nil
	}
	if f.isDir {
		return nil, fmt.Errorf("%s: %s is a directory", driverName, p)
	}
	return f, nil
}

// GetContent returns a copy of the content of the file at p.
func (d *Driver) GetContent(_ context.Context, p string) ([]byte, error) {
	var data []byte
	err := d.readFile(p, 0, func(c content) { data = c.bytes() })
	return data, err
}

// readFile checks p and offset and calls read with the file's content while
// holding the read lock.
func (d *Driver) readFile(p string, offset int64, read func(content)) error {
	if err := checkPath(p, false); err != nil {
		return err
	}
	if offset < 0 {
		return storage.InvalidOffsetError{Path: p, Offset: offset, DriverName: driverName}
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := d.lookup(p)
	if n == nil {
		return storage.PathNotFoundError{Path: p, DriverName: driverName}
	}
	if n.isDir {
		return fmt.Errorf("%s: reading %s: is a directory", driverName, p)
	}
	if offset > n.data.size {
		return storage.InvalidOffsetError{Path: p, Offset: offset, DriverName: driverName}
	}
	read(n.data)
	return nil
}

// PutContent replaces the content of the file at p, creating it if needed.
func (d *Driver) PutContent(_ context.Context, p string, data []byte) error {
	if err := checkPath(p, false); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	f, err := d.mkfile(p)
	if err != nil {
		return err
	}
	// A copy, never the caller's slice: they may reuse it.
	f.data = contentOf(data)
	f.mod = time.Now()
	return nil
}

// Reader returns the content of the file at p from offset on. An offset
// equal to the size gives an empty reader; a larger one is an
// InvalidOffsetError.
func (d *Driver) Reader(_ context.Context, p string, offset int64) (io.ReadCloser, error) {
	var r io.Reader
	if err := d.readFile(p, offset, func(c content) { r = c.readerAt(offset) }); err != nil {
		return nil, err
	}
	return io.NopCloser(r), nil
}

// Writer opens the file at p for writing. With appendMode the writer
// continues after the existing content; otherwise the file is truncated.
// Written data goes straight to the file, as it does on a filesystem, so a
// large stream is held once and not again in a buffer.
func (d *Driver) Writer(_ context.Context, p string, appendMode bool) (storage.FileWriter, error) {
	if err := checkPath(p, false); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	f, err := d.mkfile(p)
	if err != nil {
		return nil, err
	}
	if !appendMode {
		f.data = content{}
		f.mod = time.Now()
	}
	return &writer{d: d, path: p, f: f, size: f.data.size}, nil
}

// Stat describes the file or directory at p.
func (d *Driver) Stat(_ context.Context, p string) (storage.FileInfo, error) {
	if err := checkPath(p, true); err != nil {
		return nil, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := d.lookup(p)
	if n == nil {
		return nil, storage.PathNotFoundError{Path: p, DriverName: driverName}
	}
	fi := storage.FileInfoFields{Path: p, IsDir: n.isDir, ModTime: n.mod}
	if !n.isDir {
		fi.Size = n.data.size
	}
	return storage.FileInfoInternal{FileInfoFields: fi}, nil
}

// List returns the sorted full paths of the direct children of directory p.
// A file has no children: listing one is a PathNotFoundError, as it is on
// object stores, so that walks that stumble on a file need no special case.
func (d *Driver) List(_ context.Context, p string) ([]string, error) {
	if err := checkPath(p, true); err != nil {
		return nil, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := d.lookup(p)
	if n == nil || !n.isDir {
		return nil, storage.PathNotFoundError{Path: p, DriverName: driverName}
	}
	keys := make([]string, 0, len(n.children))
	for name := range n.children {
		keys = append(keys, path.Join(p, name))
	}
	slices.Sort(keys)
	return keys, nil
}

// Move renames the file or directory at src to dst, replacing a file at
// dst. It is atomic: no reader sees dst missing or half-moved.
func (d *Driver) Move(_ context.Context, src, dst string) error {
	if err := checkPath(src, false); err != nil {
		return err
	}
	if err := checkPath(dst, false); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.lookup(src)
	if n == nil {
		return storage.PathNotFoundError{Path: src, DriverName: driverName}
	}
	if src == dst {
		return nil
	}
	if strings.HasPrefix(dst, src+"/") {
		return fmt.Errorf("%s: moving %s into itself (%s)", driverName, src, dst)
	}
	parent, err := d.mkdirs(path.Dir(dst))
	if err != nil {
		return fmt.Errorf("moving %s to %s: %w", src, dst, err)
	}
	name := path.Base(dst)
	if old := parent.children[name]; old != nil && (old.isDir || n.isDir) {
		// Only a file may replace a file: replacing a directory would
		// silently drop a tree, and rename(2) refuses a directory over a file.
		return fmt.Errorf("%s: moving %s to %s: destination exists and one of them is a directory", driverName, src, dst)
	}
	now := time.Now()
	srcParent := d.lookup(path.Dir(src))
	delete(srcParent.children, path.Base(src))
	srcParent.mod = now
	parent.children[name] = n
	parent.mod = now
	return nil
}

// Delete removes the file or directory tree at p.
func (d *Driver) Delete(_ context.Context, p string) error {
	if err := checkPath(p, false); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lookup(p) == nil {
		return storage.PathNotFoundError{Path: p, DriverName: driverName}
	}
	parent := d.lookup(path.Dir(p))
	delete(parent.children, path.Base(p))
	parent.mod = time.Now()
	return nil
}

// RedirectURL returns "": content is only reachable through the driver.
func (d *Driver) RedirectURL(*http.Request, string) (string, error) {
	return "", nil
}

// Walk visits everything under p in lexical depth-first order; see
// storage.WalkDir for how f steers it. The lock is held only while a
// directory is listed, never while f runs, so f may use the driver.
func (d *Driver) Walk(ctx context.Context, p string, f storage.WalkFn, options ...func(*storage.WalkOptions)) error {
	if err := checkPath(p, true); err != nil {
		return err
	}
	return storage.WalkDir(ctx, p, d.readDir, f, options...)
}

// readDir lists directory dir with the FileInfo of each child.
func (d *Driver) readDir(_ context.Context, dir string) ([]storage.FileInfo, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := d.lookup(dir)
	if n == nil || !n.isDir {
		return nil, storage.PathNotFoundError{Path: dir, DriverName: driverName}
	}
	infos := make([]storage.FileInfo, 0, len(n.children))
	for name, c := range n.children {
		fi := storage.FileInfoFields{Path: path.Join(dir, name), IsDir: c.isDir, ModTime: c.mod}
		if !c.isDir {
			fi.Size = c.data.size
		}
		infos = append(infos, storage.FileInfoInternal{FileInfoFields: fi})
	}
	return infos, nil
}

// writer appends to a file node. If the file is deleted or replaced while
// the writer is open, the writes go to the detached node and are lost, as
// they would be to an unlinked file on disk.
type writer struct {
	d         *Driver
	path      string
	f         *node
	size      int64
	closed    bool
	committed bool
	cancelled bool
}

func (w *writer) Write(p []byte) (int, error) {
	switch {
	case w.closed:
		return 0, fmt.Errorf("%s: writing %s: writer already closed", driverName, w.path)
	case w.committed:
		return 0, fmt.Errorf("%s: writing %s: writer already committed", driverName, w.path)
	case w.cancelled:
		return 0, fmt.Errorf("%s: writing %s: writer already cancelled", driverName, w.path)
	}
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	w.f.data.append(p)
	w.f.mod = time.Now()
	w.size += int64(len(p))
	return len(p), nil
}

func (w *writer) Size() int64 { return w.size }

func (w *writer) Close() error {
	if w.closed {
		return fmt.Errorf("%s: closing writer for %s: already closed", driverName, w.path)
	}
	w.closed = true
	return nil
}

// Cancel removes the file, unless another file has replaced it meanwhile.
func (w *writer) Cancel(context.Context) error {
	if w.closed {
		return fmt.Errorf("%s: cancelling writer for %s: already closed", driverName, w.path)
	}
	w.cancelled = true
	w.closed = true
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	if w.d.lookup(w.path) == w.f {
		parent := w.d.lookup(path.Dir(w.path))
		delete(parent.children, path.Base(w.path))
		parent.mod = time.Now()
	}
	return nil
}

func (w *writer) Commit(context.Context) error {
	switch {
	case w.closed:
		return fmt.Errorf("%s: committing %s: writer already closed", driverName, w.path)
	case w.committed:
		return fmt.Errorf("%s: committing %s: already committed", driverName, w.path)
	}
	w.committed = true
	return nil
}
