package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFile is the file LockDir locks inside the directory it claims.
const LockFile = "shoal.lock"

// DirInUseError is LockDir's error when another process holds the
// directory: it names that process, which the person reading it can find.
type DirInUseError struct {
	Dir string
	// PID is the holder's process id, 0 when it had not written it yet.
	PID int
}

func (e *DirInUseError) Error() string {
	holder := "another process"
	if e.PID > 0 {
		holder = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("%s is in use by %s (it holds the lock on %s)", e.Dir, holder, filepath.Join(e.Dir, LockFile))
}

// LockDir claims dir, creating it if needed, for this process: an
// exclusive lock on dir/shoal.lock, which holds the process id. The lock
// goes with the process, however it ends, so a crash leaves nothing to
// clean up. A second claim, by another process or another caller in this
// one, fails with a *DirInUseError until release is called.
func LockDir(dir string) (release func() error, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if !held {
		b, _ := os.ReadFile(path)
		f.Close()
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return nil, &DirInUseError{Dir: dir, PID: pid}
	}
	if err = f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	// Closing the file releases the lock. The file stays: removing it
	// would race with a process that opened it and waits to lock it.
	return f.Close, nil
}
