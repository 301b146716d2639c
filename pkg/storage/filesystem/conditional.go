package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/shoal-dev/shoal/pkg/storage"
)

var _ storage.ConditionalWriter = (*Driver)(nil)

// conditionalLockName is the lock file, in the temporary directory, that
// every conditional write holds (flock) while it compares and writes, so
// that the compare and the write are one step for every process sharing the
// root, on one host or over NFS (where Linux emulates flock with the
// server's byte-range locks).
const conditionalLockName = "conditional.lock"

// GetContentVersion reads the file at p and its version (a hash of its
// content).
func (d *Driver) GetContentVersion(ctx context.Context, p string) ([]byte, string, error) {
	b, err := d.GetContent(ctx, p)
	if err != nil {
		return nil, "", err
	}
	return b, storage.ContentVersion(b), nil
}

// PutContentIf replaces the file at p if its version is still ifVersion, or
// creates it if ifVersion is "" and there is no file at p, as PutContent
// does: a synced temporary file renamed (or, to create, hard-linked) into
// place.
func (d *Driver) PutContentIf(_ context.Context, p string, content []byte, ifVersion string) (string, error) {
	if err := checkPath(p, false); err != nil {
		return "", err
	}
	unlock, err := d.lockConditional()
	if err != nil {
		return "", err
	}
	defer unlock()

	full := d.fullPath(p)
	cur, err := os.ReadFile(full)
	exists := err == nil
	switch {
	case err != nil && !d.notExist(err):
		return "", fmt.Errorf("%s: reading %s before a conditional write: %w", driverName, p, err)
	case !exists && ifVersion != "":
		return "", fmt.Errorf("%s: replacing %s: it is gone: %w", driverName, p, storage.ErrConditionFailed)
	case exists && ifVersion == "":
		return "", fmt.Errorf("%s: creating %s: it exists: %w", driverName, p, storage.ErrConditionFailed)
	case exists && storage.ContentVersion(cur) != ifVersion:
		return "", fmt.Errorf("%s: replacing %s: it was written since version %s: %w", driverName, p, ifVersion, storage.ErrConditionFailed)
	}

	tmp, err := d.createTemp()
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // after a link or a failure; gone after a rename
	if err := writeAndSync(tmp, content); err != nil {
		return "", fmt.Errorf("%s: writing %s: %w", driverName, p, err)
	}
	if exists {
		err = renameInto(tmp.Name(), full)
	} else {
		// A link fails if the name exists, so not even an unconditional
		// PutContent racing with this one is overwritten.
		if err = os.MkdirAll(filepath.Dir(full), 0o777); err == nil {
			err = os.Link(tmp.Name(), full)
		}
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("%s: creating %s: it exists: %w", driverName, p, storage.ErrConditionFailed)
		}
	}
	if err != nil {
		return "", fmt.Errorf("%s: putting %s in place: %w", driverName, p, err)
	}
	if err := syncDir(filepath.Dir(full)); err != nil {
		return "", fmt.Errorf("%s: putting %s: %w", driverName, p, err)
	}
	return storage.ContentVersion(content), nil
}

// lockConditional takes the conditional-write lock and returns its release.
// The lock file may be removed by a process sweeping stale temporary files
// (it is never written, so it looks old): a lock taken on a file that is no
// longer the one at the lock's name is let go and taken again.
func (d *Driver) lockConditional() (func(), error) {
	name := filepath.Join(d.tmpDir, conditionalLockName)
	for {
		if err := os.MkdirAll(d.tmpDir, 0o777); err != nil {
			return nil, fmt.Errorf("%s: creating %s: %w", driverName, d.tmpDir, err)
		}
		// Opened for writing: an exclusive lock over NFS needs it.
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			return nil, fmt.Errorf("%s: opening the lock %s: %w", driverName, name, err)
		}
		if err := flock(f, syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: locking %s: %w", driverName, name, err)
		}
		held, err1 := f.Stat()
		atName, err2 := os.Stat(name)
		if err1 == nil && err2 == nil && os.SameFile(held, atName) {
			return func() {
				_ = flock(f, syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		f.Close() // closing releases the lock
		if err1 != nil {
			return nil, fmt.Errorf("%s: checking the lock %s: %w", driverName, name, err1)
		}
	}
}

// flock is syscall.Flock, retried when a signal interrupts the wait.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
