package soak_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// stallHold is how long storage stays stalled once the origin has given up
// on a call: long enough for requests and readiness probes to run into it,
// short enough for the time budget.
const stallHold = 3 * time.Second

// stallFS is the origin's storage directory served through bindfs, a FUSE
// file system passing every call through to a directory beside it. Stopping
// the bindfs process (SIGSTOP) makes every call into it hang, ignoring the
// caller's context, as a hung NFS mount or an HDFS namenode that stopped
// answering does; SIGCONT lets them all go on. The filesystem driver offers
// no other way to hang a call in another process.
type stallFS struct {
	cmd          *exec.Cmd
	backing, mnt string
}

// mountStallFS serves dir/storage-backing at dir/storage-mnt through bindfs
// and unmounts it when the test ends. The error says why it could not.
func (d *deployment) mountStallFS() (*stallFS, error) {
	bindfs, err := exec.LookPath("bindfs")
	if err != nil {
		return nil, fmt.Errorf("no bindfs (Debian package bindfs, which .ci/run installs): %w", err)
	}
	fusermount, err := exec.LookPath("fusermount3")
	if err != nil {
		if fusermount, err = exec.LookPath("fusermount"); err != nil {
			return nil, fmt.Errorf("no fusermount to unmount bindfs with: %w", err)
		}
	}
	backing, mnt := filepath.Join(d.dir, "storage-backing"), filepath.Join(d.dir, "storage-mnt")
	for _, p := range []string{backing, mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			return nil, err
		}
	}
	logf, err := os.Create(filepath.Join(d.dir, "bindfs.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// -f: in the foreground, so that the test holds the process that
	// serves the calls and can stop it.
	cmd := exec.Command(bindfs, "-f", "--no-allow-other", backing, mnt)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting bindfs: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s := &stallFS{cmd: cmd, backing: backing, mnt: mnt}
	d.t.Cleanup(func() {
		// A test that failed during the stall must not leave every
		// process that touches the directory hanging.
		_ = cmd.Process.Signal(syscall.SIGCONT)
		if out, err := exec.Command(fusermount, "-u", mnt).CombinedOutput(); err != nil {
			d.t.Logf("unmounting %s: %v: %s; unmounting lazily", mnt, err, out)
			_ = exec.Command(fusermount, "-u", "-z", mnt).Run()
		}
		select {
		case <-exited:
		case <-time.After(testenv.DefaultStopTimeout):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	err = eventually.Wait(30*time.Second, func() bool {
		select {
		case err := <-exited:
			exited <- err
			return true
		default:
		}
		return mounted(mnt)
	})
	if err == nil && !mounted(mnt) {
		b, _ := os.ReadFile(logf.Name())
		err = fmt.Errorf("bindfs exited: %s", strings.TrimSpace(string(b)))
	}
	if err != nil {
		return nil, fmt.Errorf("mounting %s with bindfs (needs /dev/fuse): %w", mnt, err)
	}
	return s, nil
}

// mounted reports whether a file system is mounted at dir.
func mounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// storageStall stops the file system under the origin's storage until the
// origin has given up on a call (storageTimeout) and reports storage down,
// and stallHold more; then lets it go on and waits for readiness. Every
// call made meanwhile, the abandoned ones included, completes afterwards:
// checkPushes and checkStoredBlobs then show that none of them left a
// push half-visible.
func (d *deployment) storageStall() {
	t := d.t
	t.Helper()
	if d.stall == nil {
		d.logf("storage stall left out: %v", d.stallUnavailable)
		return
	}
	timeouts := func() (float64, bool) {
		m, err := testenv.ScrapeMetrics(t.Context(), d.origin.URL()+"/metrics")
		if err != nil {
			return 0, false
		}
		return m.Sum("shoal_origin_storage_timeouts_total"), m.Sum("shoal_origin_storage_up") == 0
	}
	before, _ := timeouts()
	if err := d.stall.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("stopping bindfs: %v", err)
	}
	d.setPhase("storage stalled")
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := d.stall.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Errorf("letting bindfs go on: %v", err)
			}
		}
	}
	defer resume()
	eventually.Within(t, phaseTimeout, "the origin to give up on its stalled storage (storageTimeout) and report it down", func() bool {
		n, down := timeouts()
		return down && n > before
	})
	// The fault's duration, not an assertion: requests keep running into
	// it meanwhile.
	time.Sleep(stallHold)
	resume()
	ready := testenv.HTTPReady(d.origin.URL() + "/readyz")
	eventually.Within(t, phaseTimeout, "the origin to be ready again once its storage answered", func() bool {
		return ready(t.Context()) == nil
	})
	d.setPhase("storage answers again")
}

// useStallFS puts the origin's storage on a stallFS when it can be
// mounted. Without one, under CI=true the test fails; elsewhere it runs
// without the stall.
func (d *deployment) useStallFS() {
	s, err := d.mountStallFS()
	if err != nil {
		if testenv.InCI() {
			d.t.Fatalf("test dependency unavailable (CI=true makes this a failure): %v", err)
		}
		d.stallUnavailable = errors.Join(err, errors.New("(under CI=true this fails)"))
		d.storage = filepath.Join(d.dir, "storage")
		d.storageDisk = d.storage
		return
	}
	d.stall = s
	d.storage = filepath.Join(s.mnt, "storage")
	d.storageDisk = filepath.Join(s.backing, "storage")
}
