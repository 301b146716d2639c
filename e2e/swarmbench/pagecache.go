package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// pageCacheWriteCost is what writing size bytes of new file data into the
// page cache costs this machine's kernel, as CPU time of the writing
// thread: first on whatever free memory the system has (as an agent's
// cold pull finds it), then again right after that file is deleted, on the
// pages it just freed. On a VM whose host takes back freed guest memory
// (virtio-balloon free page reporting) the first costs several times the
// second: each fresh page faults in the host. A host whose memory is in
// use pays the second. An agent writes every byte it pulls into its
// cache, so its CPU per GiB carries this cost, which a client reading
// straight from the origin (already cached there) does not pay.
func pageCacheWriteCost(dir string, size int64) (fresh, warm time.Duration, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	write := func(name string) (time.Duration, error) {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return 0, fmt.Errorf("page cache probe: %w", err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		start, err := threadCPU()
		if err != nil {
			return 0, err
		}
		for n := int64(0); n < size; n += int64(len(buf)) {
			if _, err := f.Write(buf[:min(int64(len(buf)), size-n)]); err != nil {
				return 0, fmt.Errorf("page cache probe: %w", err)
			}
		}
		end, err := threadCPU()
		return end - start, err
	}
	if fresh, err = write("pagecache-probe-1"); err != nil {
		return 0, 0, err
	}
	warm, err = write("pagecache-probe-2")
	return fresh, warm, err
}

// threadCPU is the calling OS thread's CPU time, user and system.
func threadCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		return 0, fmt.Errorf("reading the thread's CPU time: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
