// Package procstat reads what the benchmarks measure of a Linux process from
// /proc: its resident memory (VmRSS, VmHWM in /proc/<pid>/status) and its CPU
// time (utime+stime in /proc/<pid>/stat), and samples the RSS peak of some
// processes while a measurement runs; and the machine's load average.
package procstat

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Status is the memory of a process, in bytes.
type Status struct {
	RSS int64 // VmRSS: resident now
	HWM int64 // VmHWM: the kernel's peak RSS over the process's whole life
}

// ReadStatus reads VmRSS and VmHWM of process pid. A process that has exited
// (or a zombie, or a kernel thread, which have no memory lines) gives an
// error, never a zero Status.
func ReadStatus(pid int) (Status, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Status{}, fmt.Errorf("reading memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	st, err := parseStatus(f)
	if err != nil {
		return Status{}, fmt.Errorf("parsing /proc/%d/status: %w", pid, err)
	}
	return st, nil
}

// parseStatus extracts VmRSS and VmHWM ("VmRSS:	  12345 kB") from a
// /proc/<pid>/status.
func parseStatus(r io.Reader) (Status, error) {
	var st Status
	var seen int
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) != 2 || fields[1] != "kB" {
			return Status{}, fmt.Errorf("unexpected %s line %q", key, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return Status{}, fmt.Errorf("parsing %s: %w", key, err)
		}
		if key == "VmRSS" {
			st.RSS = kb << 10
		} else {
			st.HWM = kb << 10
		}
		seen++
	}
	if err := sc.Err(); err != nil {
		return Status{}, err
	}
	if seen != 2 {
		return Status{}, errors.New("no VmRSS/VmHWM lines (kernel thread or exited process?)")
	}
	return st, nil
}

// userHZ is the unit of utime and stime in /proc/<pid>/stat; it is 100 on
// every Linux architecture Go supports.
const userHZ = 100

// CPU returns the CPU time (user + system, all threads) process pid has used
// so far.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of pid %d: %w", pid, err)
	}
	d, err := parseStat(string(b))
	if err != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
	}
	return d, nil
}

// CPUDuring runs fn and returns the CPU time process pid used meanwhile.
// fn's error wins over a failure to read the CPU time.
func CPUDuring(pid int, fn func() error) (time.Duration, error) {
	before, err := CPU(pid)
	if err != nil {
		return 0, err
	}
	if err := fn(); err != nil {
		return 0, err
	}
	after, err := CPU(pid)
	if err != nil {
		return 0, err
	}
	return after - before, nil
}

// LoadAvg returns the 1, 5 and 15 minute load averages from /proc/loadavg
// ("unknown" when unreadable). The benchmarks print it beside their figures:
// on a shared machine other jobs take cores from the processes measured.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// parseStat extracts utime+stime (fields 14 and 15) from a /proc/<pid>/stat
// line. The command name (field 2) is in parentheses and may itself hold
// spaces and parentheses, so fields are counted after the last ")".
func parseStat(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so utime (14) and stime (15) are f[11] and f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name in %q, want at least 13", len(f), stat)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing CPU ticks: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// Sampler polls the VmRSS of some processes and keeps each one's peak.
// Polling can miss a spike shorter than the interval; a Status's HWM is the
// kernel's exact peak, but over the process's whole life.
type Sampler struct {
	pids     []int
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	mu   sync.Mutex
	peak []int64
	err  error
}

// StartSampler samples the RSS of pids once before it returns, then every
// interval until Stop.
func StartSampler(pids []int, every time.Duration) *Sampler {
	s := &Sampler{
		pids: append([]int(nil), pids...),
		stop: make(chan struct{}),
		done: make(chan struct{}),
		peak: make([]int64, len(pids)),
	}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *Sampler) sample() {
	for i, pid := range s.pids {
		st, err := ReadStatus(pid)
		s.mu.Lock()
		if err != nil {
			if s.err == nil {
				s.err = err
			}
		} else {
			s.peak[i] = max(s.peak[i], st.RSS)
		}
		s.mu.Unlock()
	}
}

// Stop samples a last time, stops sampling and returns each process's peak
// RSS in bytes, in the order of the pids given to StartSampler. A process
// that has exited keeps the peak it had reached (0 if it was never read);
// Err says whether that happened. Stop may be called more than once.
func (s *Sampler) Stop() []int64 {
	s.stopOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.sample()
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.peak...)
}

// Err returns the first error a sample met, such as a process that had
// exited, or nil if every sample of every process was read.
func (s *Sampler) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
