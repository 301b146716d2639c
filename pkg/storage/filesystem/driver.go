// Package filesystem is a storage driver over a local (or locally mounted)
// directory tree. It is Shoal's embedded default.
//
// A storage path /a/b is the file root/a/b, exactly as in registry:2's
// filesystem driver, so root/docker/registry/v2/... is registry:2's layout
// byte for byte and the two can serve the same directory.
//
// Beyond the reference driver, PutContent is atomic (readers see the old
// content or the new, never a part), Move is a single rename(2), readers
// stream from the open file, and Walk reads each directory once.
//
// PutContent writes its temporary files in root/.shoal-tmp rather than next
// to the target. That keeps half-written files out of every directory that
// registry:2 or Shoal lists (a stray file in a tags or repositories
// directory would read as a tag or repository), and leaves one place to
// sweep after a crash. The price is that root must be one filesystem, since
// rename(2) does not cross mounts; registry:2 has the same requirement for
// moving uploads into blobs. The name .shoal-tmp is therefore reserved at
// the top of the tree: it is hidden from List and Walk, and paths under it
// are invalid.
package filesystem

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/pkg/storage"
)

const (
	driverName = "filesystem"

	// tmpName is the directory under root that holds PutContent's
	// temporary files.
	tmpName = ".shoal-tmp"

	// staleTempAge is how old a temporary file must be before New removes
	// it. A PutContent finishes in well under a second; the margin is for
	// other nodes sharing the directory over NFS, whose writes must not be
	// swept from under them.
	staleTempAge = time.Hour

	// writeBufferSize batches the small writes of HTTP bodies into fewer
	// system calls.
	writeBufferSize = 64 << 10
)

// Driver is a storage.Driver over the directory tree at its root. It holds
// no state besides the root, so it is safe for concurrent use, also by
// several processes.
type Driver struct {
	root   string
	tmpDir string
}

var _ storage.Driver = (*Driver)(nil)

// New returns a driver over root, creating root if it does not exist, and
// removes temporary files that a crashed process left behind.
func New(root string) (*Driver, error) {
	if root == "" {
		return nil, errors.New("filesystem: empty root directory")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("filesystem: resolving root %q: %w", root, err)
	}
	d := &Driver{root: abs, tmpDir: filepath.Join(abs, tmpName)}
	if err := os.MkdirAll(d.tmpDir, 0o777); err != nil {
		return nil, fmt.Errorf("filesystem: creating root %s: %w", abs, err)
	}
	if err := d.sweepTemp(time.Now().Add(-staleTempAge)); err != nil {
		return nil, err
	}
	return d, nil
}

// sweepTemp removes temporary files last modified before cutoff.
func (d *Driver) sweepTemp(cutoff time.Time) error {
	entries, err := os.ReadDir(d.tmpDir)
	if err != nil {
		return fmt.Errorf("filesystem: listing %s: %w", d.tmpDir, err)
	}
	removed := 0
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(d.tmpDir, e.Name())); err == nil {
			removed++
		}
	}
	if removed > 0 {
		slog.Info("removed stale temporary files", "driver", driverName, "dir", d.tmpDir, "count", removed)
	}
	return nil
}

// Name returns "filesystem".
func (d *Driver) Name() string { return driverName }

// checkPath enforces the reference path grammar. It also rejects "." and
// "..", which the grammar allows but which would let a path escape root,
// and the reserved temporary directory.
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
	if p == "/"+tmpName || strings.HasPrefix(p, "/"+tmpName+"/") {
		return storage.InvalidPathError{Path: p, DriverName: driverName}
	}
	return nil
}

func (d *Driver) fullPath(p string) string {
	return filepath.Join(d.root, filepath.FromSlash(p))
}

// notExist reports whether err means the path is not there, including
// because one of its parents is a file. Not when the driver's own temporary
// directory is gone as well: then the storage itself is (a volume
// unmounted, the root replaced), and the error must be an outage, not an
// answer that content is missing.
func (d *Driver) notExist(err error) bool {
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return false
	}
	fi, serr := os.Stat(d.tmpDir)
	return serr == nil && fi.IsDir()
}

// open opens the file at p for reading and checks that offset is within it.
func (d *Driver) open(p string, offset int64) (*os.File, int64, error) {
	if err := checkPath(p, false); err != nil {
		return nil, 0, err
	}
	if offset < 0 {
		return nil, 0, storage.InvalidOffsetError{Path: p, Offset: offset, DriverName: driverName}
	}
	f, err := os.Open(d.fullPath(p))
	if err != nil {
		if d.notExist(err) {
			return nil, 0, storage.PathNotFoundError{Path: p, DriverName: driverName}
		}
		return nil, 0, fmt.Errorf("%s: opening %s: %w", driverName, p, err)
	}
	info, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("%s: stat of %s: %w", driverName, p, err)
	}
	if info.IsDir() {
		_ = f.Close()
		return nil, 0, fmt.Errorf("%s: reading %s: is a directory", driverName, p)
	}
	if offset > info.Size() {
		_ = f.Close()
		return nil, 0, storage.InvalidOffsetError{Path: p, Offset: offset, DriverName: driverName}
	}
	return f, info.Size(), nil
}

// GetContent reads the whole file at p; it is meant for small files.
func (d *Driver) GetContent(_ context.Context, p string) ([]byte, error) {
	f, size, err := d.open(p, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// One more byte than the size, so a file that grew meanwhile still ends
	// with a single read returning EOF.
	buf := make([]byte, 0, size+1)
	for {
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: reading %s: %w", driverName, p, err)
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// PutContent replaces the file at p atomically: the content is written and
// synced to a temporary file, which is then renamed over p.
func (d *Driver) PutContent(_ context.Context, p string, content []byte) error {
	if err := checkPath(p, false); err != nil {
		return err
	}
	full := d.fullPath(p)
	tmp, err := d.createTemp()
	if err != nil {
		return err
	}
	if err := writeAndSync(tmp, content); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("%s: writing %s: %w", driverName, p, err)
	}
	if err := renameInto(tmp.Name(), full); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("%s: putting %s in place: %w", driverName, p, err)
	}
	if err := syncDir(filepath.Dir(full)); err != nil {
		return fmt.Errorf("%s: putting %s: %w", driverName, p, err)
	}
	return nil
}

// createTemp creates a new empty file in the temporary directory. It
// does not use os.CreateTemp, whose mode 0600 would survive the rename; 0666
// less the umask is what every other file here gets.
func (d *Driver) createTemp() (*os.File, error) {
	var random [12]byte
	for range 10 {
		_, _ = rand.Read(random[:])
		name := filepath.Join(d.tmpDir, hex.EncodeToString(random[:]))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if errors.Is(err, fs.ErrNotExist) {
			// Someone removed the temporary directory; recreate it.
			if mkErr := os.MkdirAll(d.tmpDir, 0o777); mkErr != nil {
				return nil, fmt.Errorf("%s: recreating %s: %w", driverName, d.tmpDir, mkErr)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: creating temporary file: %w", driverName, err)
		}
		return f, nil
	}
	return nil, fmt.Errorf("%s: creating temporary file in %s: gave up after repeated collisions", driverName, d.tmpDir)
}

func writeAndSync(f *os.File, content []byte) error {
	_, err := f.Write(content)
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	return err
}

// syncDir makes a rename or a new entry in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory %s to sync it: %w", dir, err)
	}
	err = f.Sync()
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// Reader returns the open file at p, positioned at offset. An offset equal
// to the size gives an empty reader; a larger one is an InvalidOffsetError.
func (d *Driver) Reader(_ context.Context, p string, offset int64) (io.ReadCloser, error) {
	f, _, err := d.open(p, offset)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: seeking %s to %d: %w", driverName, p, offset, err)
	}
	return f, nil
}

// Writer opens the file at p for writing, creating it and its parents. With
// appendMode the writes go after the existing content (O_APPEND), which is
// how an upload is continued, possibly by another process; otherwise the
// file is truncated. Close and Commit both flush and fsync.
func (d *Driver) Writer(_ context.Context, p string, appendMode bool) (storage.FileWriter, error) {
	if err := checkPath(p, false); err != nil {
		return nil, err
	}
	full := d.fullPath(p)
	if err := os.MkdirAll(filepath.Dir(full), 0o777); err != nil {
		return nil, fmt.Errorf("%s: creating parents of %s: %w", driverName, p, err)
	}
	flags := os.O_WRONLY | os.O_CREATE
	if appendMode {
		flags |= os.O_APPEND
	} else {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(full, flags, 0o666)
	if err != nil {
		return nil, fmt.Errorf("%s: opening %s for writing: %w", driverName, p, err)
	}
	info, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: stat of %s: %w", driverName, p, err)
	}
	return &fileWriter{
		path: p,
		file: f,
		bw:   bufio.NewWriterSize(f, writeBufferSize),
		size: info.Size(),
	}, nil
}

// Stat describes the file or directory at p. Directories have size 0.
func (d *Driver) Stat(_ context.Context, p string) (storage.FileInfo, error) {
	if err := checkPath(p, true); err != nil {
		return nil, err
	}
	info, err := os.Stat(d.fullPath(p))
	if err != nil {
		if d.notExist(err) {
			return nil, storage.PathNotFoundError{Path: p, DriverName: driverName}
		}
		return nil, fmt.Errorf("%s: stat of %s: %w", driverName, p, err)
	}
	return fileInfo(p, info), nil
}

func fileInfo(p string, info fs.FileInfo) storage.FileInfo {
	fi := storage.FileInfoFields{Path: p, ModTime: info.ModTime(), IsDir: info.IsDir()}
	if !fi.IsDir {
		fi.Size = info.Size()
	}
	return storage.FileInfoInternal{FileInfoFields: fi}
}

// List returns the sorted full paths of the direct children of directory p.
// A file has no children: listing one is a PathNotFoundError, as it is on
// object stores, so that walks that stumble on a file need no special case.
func (d *Driver) List(_ context.Context, p string) ([]string, error) {
	if err := checkPath(p, true); err != nil {
		return nil, err
	}
	entries, err := d.readDir(p)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = path.Join(p, e.Name())
	}
	return keys, nil
}

// readDir returns the entries of directory p sorted by name, without the
// temporary directory.
func (d *Driver) readDir(p string) ([]fs.DirEntry, error) {
	entries, err := os.ReadDir(d.fullPath(p))
	if err != nil {
		if d.notExist(err) {
			return nil, storage.PathNotFoundError{Path: p, DriverName: driverName}
		}
		return nil, fmt.Errorf("%s: listing %s: %w", driverName, p, err)
	}
	if p == "/" {
		for i, e := range entries {
			if e.Name() == tmpName {
				entries = append(entries[:i], entries[i+1:]...)
				break
			}
		}
	}
	return entries, nil
}

// Move renames src to dst with one rename(2), creating the parents of dst,
// so readers see either the old dst or the new one. An existing file at dst
// is replaced.
func (d *Driver) Move(_ context.Context, src, dst string) error {
	if err := checkPath(src, false); err != nil {
		return err
	}
	if err := checkPath(dst, false); err != nil {
		return err
	}
	from, to := d.fullPath(src), d.fullPath(dst)
	if _, err := os.Lstat(from); err != nil {
		if d.notExist(err) {
			return storage.PathNotFoundError{Path: src, DriverName: driverName}
		}
		return fmt.Errorf("%s: stat of %s: %w", driverName, src, err)
	}
	if err := renameInto(from, to); err != nil {
		if _, statErr := os.Lstat(from); d.notExist(statErr) {
			// src went away between the Lstat and the rename.
			return storage.PathNotFoundError{Path: src, DriverName: driverName}
		}
		return fmt.Errorf("%s: moving %s to %s: %w", driverName, src, dst, err)
	}
	toDir := filepath.Dir(to)
	if err := syncDir(toDir); err != nil {
		return fmt.Errorf("%s: moving %s to %s: %w", driverName, src, dst, err)
	}
	if fromDir := filepath.Dir(from); fromDir != toDir {
		if err := syncDir(fromDir); err != nil {
			return fmt.Errorf("%s: moving %s to %s: %w", driverName, src, dst, err)
		}
	}
	return nil
}

// renameInto renames from to to, creating the parents of to. A concurrent
// Delete may remove the new parent before the rename (GC sweeping an empty
// blob directory while a push uploads that blob again), so the rename is
// retried a few times while the source is still there.
func renameInto(from, to string) error {
	dir := filepath.Dir(to)
	var err error
	for range 3 {
		if err = os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		err = os.Rename(from, to)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if _, statErr := os.Lstat(from); statErr != nil {
			return err
		}
	}
	return err
}

// Delete removes the file or directory tree at p.
func (d *Driver) Delete(_ context.Context, p string) error {
	if err := checkPath(p, false); err != nil {
		return err
	}
	full := d.fullPath(p)
	if _, err := os.Lstat(full); err != nil {
		if d.notExist(err) {
			return storage.PathNotFoundError{Path: p, DriverName: driverName}
		}
		return fmt.Errorf("%s: stat of %s: %w", driverName, p, err)
	}
	if err := os.RemoveAll(full); err != nil {
		return fmt.Errorf("%s: deleting %s: %w", driverName, p, err)
	}
	return nil
}

// RedirectURL returns "": content is only reachable through the driver.
func (d *Driver) RedirectURL(*http.Request, string) (string, error) {
	return "", nil
}

// fileWriter writes through a buffer to the open file.
type fileWriter struct {
	path      string
	file      *os.File
	bw        *bufio.Writer
	size      int64
	closed    bool
	committed bool
	cancelled bool
}

func (w *fileWriter) Write(p []byte) (int, error) {
	switch {
	case w.closed:
		return 0, fmt.Errorf("%s: writing %s: writer already closed", driverName, w.path)
	case w.committed:
		return 0, fmt.Errorf("%s: writing %s: writer already committed", driverName, w.path)
	case w.cancelled:
		return 0, fmt.Errorf("%s: writing %s: writer already cancelled", driverName, w.path)
	}
	n, err := w.bw.Write(p)
	w.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("%s: writing %s: %w", driverName, w.path, err)
	}
	return n, nil
}

func (w *fileWriter) Size() int64 { return w.size }

func (w *fileWriter) flushAndSync() error {
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("%s: writing %s: %w", driverName, w.path, err)
	}
	if err := w.file.Sync(); err != nil {
		return fmt.Errorf("%s: syncing %s: %w", driverName, w.path, err)
	}
	return nil
}

// Close flushes and syncs what was written, unless Commit already did, so
// that an upload chunk survives a crash once its request has been answered.
func (w *fileWriter) Close() error {
	if w.closed {
		return fmt.Errorf("%s: closing writer for %s: already closed", driverName, w.path)
	}
	w.closed = true
	var err error
	if !w.committed {
		err = w.flushAndSync()
	}
	if closeErr := w.file.Close(); err == nil && closeErr != nil {
		err = fmt.Errorf("%s: closing %s: %w", driverName, w.path, closeErr)
	}
	return err
}

// Cancel closes the file and removes it.
func (w *fileWriter) Cancel(context.Context) error {
	if w.closed {
		return fmt.Errorf("%s: cancelling writer for %s: already closed", driverName, w.path)
	}
	w.cancelled = true
	w.closed = true
	_ = w.file.Close()
	if err := os.Remove(w.file.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: removing cancelled %s: %w", driverName, w.path, err)
	}
	return nil
}

// Commit flushes and syncs what was written.
func (w *fileWriter) Commit(context.Context) error {
	switch {
	case w.closed:
		return fmt.Errorf("%s: committing %s: writer already closed", driverName, w.path)
	case w.committed:
		return fmt.Errorf("%s: committing %s: already committed", driverName, w.path)
	}
	if err := w.flushAndSync(); err != nil {
		return err
	}
	w.committed = true
	return nil
}
