package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// statusKiB reads a "Key:   123 kB" line of /proc/<pid>/status, in bytes.
func statusKiB(pid int, key string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %s of pid %d: %w", key, pid, err)
		}
		return n << 10, nil
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}

// rssSampler polls VmRSS of some processes and keeps each one's peak.
type rssSampler struct {
	pids []int
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	peak []int64
}

func sampleRSS(pids []int, every time.Duration) *rssSampler {
	s := &rssSampler{pids: pids, stop: make(chan struct{}), done: make(chan struct{}), peak: make([]int64, len(pids))}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) sample() {
	for i, pid := range s.pids {
		if v, err := statusKiB(pid, "VmRSS"); err == nil {
			s.mu.Lock()
			s.peak[i] = max(s.peak[i], v)
			s.mu.Unlock()
		}
	}
}

// finish stops sampling and returns the peaks, each raised to the
// process's VmHWM (the kernel's own peak, which catches spikes between
// samples) when that is readable.
func (s *rssSampler) finish() []int64 {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]int64(nil), s.peak...)
	for i, pid := range s.pids {
		if v, err := statusKiB(pid, "VmHWM"); err == nil {
			out[i] = max(out[i], v)
		}
	}
	return out
}
