package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// requestRate runs clients goroutines that repeat newReq until d has passed and returns the
// number of successful requests and the time they took. Any failed request fails the measurement: a server that is
// fast because it answers errors must not score.
func requestRate(ctx context.Context, hc *http.Client, clients int, d time.Duration, newReq func(context.Context) (*http.Request, error)) (int64, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		ok       atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				req, err := newReq(ctx)
				if err != nil {
					fail(err)
					return
				}
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err))
					}
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					fail(fmt.Errorf("%s %s: status %d", req.Method, req.URL.Path, resp.StatusCode))
					return
				}
				if err != nil {
					fail(fmt.Errorf("%s %s: reading body: %w", req.Method, req.URL.Path, err))
					return
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, elapsed, firstErr
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return 0, elapsed, err
	}
	return ok.Load(), elapsed, nil
}

// rssSampler records the peak VmRSS of a process, polled from /proc/<pid>/status. Polling can
// miss a spike shorter than the interval; VmHWM (read at the end) is the kernel's exact peak but
// covers the process's whole life, so both are reported.
type rssSampler struct {
	pid  int
	peak atomic.Int64 // bytes
	err  atomic.Value // first error, error
	stop chan struct{}
	done chan struct{}
}

func startRSSSampler(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				s.sample()
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) sample() {
	st, err := readProcStatus(s.pid)
	if err != nil {
		s.err.CompareAndSwap(nil, err)
		return
	}
	for {
		cur := s.peak.Load()
		if st.rss <= cur || s.peak.CompareAndSwap(cur, st.rss) {
			return
		}
	}
}

// finish stops sampling and returns the peak RSS in bytes.
func (s *rssSampler) finish() (int64, error) {
	close(s.stop)
	<-s.done
	if err, ok := s.err.Load().(error); ok {
		return s.peak.Load(), err
	}
	return s.peak.Load(), nil
}

type procStatus struct {
	rss int64 // VmRSS, bytes
	hwm int64 // VmHWM, bytes
}

func readProcStatus(pid int) (procStatus, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, fmt.Errorf("reading memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	st, err := parseProcStatus(f)
	if err != nil {
		return st, fmt.Errorf("parsing /proc/%d/status: %w", pid, err)
	}
	return st, nil
}

// parseProcStatus extracts VmRSS and VmHWM ("VmRSS:	  12345 kB") from a /proc/<pid>/status.
func parseProcStatus(r io.Reader) (procStatus, error) {
	var st procStatus
	var seen int
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) != 2 || fields[1] != "kB" {
			return st, fmt.Errorf("unexpected %s line %q", key, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return st, fmt.Errorf("parsing %s: %w", key, err)
		}
		if key == "VmRSS" {
			st.rss = kb * 1024
		} else {
			st.hwm = kb * 1024
		}
		seen++
	}
	if err := sc.Err(); err != nil {
		return st, err
	}
	if seen != 2 {
		return st, errors.New("no VmRSS/VmHWM lines (kernel thread or exited process?)")
	}
	return st, nil
}

// userHZ is the unit of utime/stime in /proc/<pid>/stat; it is 100 on every Linux architecture
// Go supports.
const userHZ = 100

// processCPU returns the CPU time (user + system, all threads) a process has used so far.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of pid %d: %w", pid, err)
	}
	return parseProcStat(string(b))
}

// parseProcStat extracts utime+stime (fields 14 and 15) from a /proc/<pid>/stat line. The command
// name (field 2) is in parentheses and may contain spaces, so fields are counted after its ")".
func parseProcStat(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so utime (14) and stime (15) are f[11] and f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat %q: %d fields after the name", stat, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing CPU ticks in /proc stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// serverCPU runs fn and returns the CPU time process pid used meanwhile. fn's error wins over a
// failure to read the CPU time.
func serverCPU(pid int, fn func() error) (time.Duration, error) {
	before, err := processCPU(pid)
	if err != nil {
		return 0, err
	}
	if err := fn(); err != nil {
		return 0, err
	}
	after, err := processCPU(pid)
	if err != nil {
		return 0, err
	}
	return after - before, nil
}
