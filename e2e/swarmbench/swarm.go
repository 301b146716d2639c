package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/e2e/procstat"
)

// pullAll makes host i GET urls[i] at the same moment, in-process on
// loopback, through a client process inside the host's namespace in netns
// mode (so that the client reaches its agent over the namespace's loopback,
// as dockerd does, and the origin over the host's shaped link).
func pullAll(ctx context.Context, netMode bool, urls []string, timeout time.Duration) (start time.Time, results []pullResult, err error) {
	n := len(urls)
	results = make([]pullResult, n)
	// Time for n client processes to start on two busy cores.
	start = time.Now().Add(500 * time.Millisecond)
	if netMode {
		start = time.Now().Add(time.Duration(2+n/10) * time.Second)
	}
	self, err := os.Executable()
	if err != nil {
		return start, nil, fmt.Errorf("finding this program for the pull clients: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: n}}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if !netMode {
				time.Sleep(time.Until(start))
				pctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				results[i] = pull(pctx, client, urls[i])
				results[i].Host = i
				return
			}
			results[i] = pullInNS(ctx, self, i, urls[i], start, timeout)
		})
	}
	wg.Wait()
	return start, results, ctx.Err()
}

func pullInNS(ctx context.Context, self string, i int, url string, at time.Time, timeout time.Duration) pullResult {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", agentNS(i), self,
		"-pull", url, "-pull-host", strconv.Itoa(i),
		"-pull-at", strconv.FormatInt(at.UnixNano(), 10), "-pull-timeout", timeout.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	r := pullResult{Host: i}
	if err := cmd.Run(); err != nil {
		r.Err = fmt.Sprintf("pull client in %s: %v: %s", agentNS(i), err, strings.TrimSpace(stderr.String()))
		return r
	}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		r.Err = fmt.Sprintf("pull client in %s printed %q: %v", agentNS(i), stdout.String(), err)
	}
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r
}

// pullStats summarizes one run of n pulls.
type pullStats struct {
	ok, failed, wrong int
	firstErr          string
	// times of the successful pulls, sorted.
	times []time.Duration
	// wall: from the common start to the last byte of the last pull.
	wall  time.Duration
	bytes int64
	// clientCPU is the pull clients' CPU time (netns mode only: there
	// they are processes of their own).
	clientCPU time.Duration
}

func summarize(l layer, start time.Time, results []pullResult) pullStats {
	var s pullStats
	var last int64
	for _, r := range results {
		s.bytes += r.Bytes
		s.clientCPU += r.cpu
		last = max(last, r.End)
		switch {
		case r.Err != "":
			s.failed++
			if s.firstErr == "" {
				s.firstErr = fmt.Sprintf("host %d: %s", r.Host, r.Err)
			}
		case r.Digest != l.digest || r.Bytes != l.size:
			s.wrong++
			if s.firstErr == "" {
				s.firstErr = fmt.Sprintf("host %d got %d bytes with digest %s, want %d bytes with %s", r.Host, r.Bytes, r.Digest, l.size, l.digest)
			}
		default:
			s.ok++
			s.times = append(s.times, r.took())
		}
	}
	slices.Sort(s.times)
	if last > 0 {
		s.wall = time.Duration(last - start.UnixNano())
	}
	return s
}

// percentile is the nearest-rank percentile of sorted times (0 if none).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(k, 0), len(sorted)-1)]
}

func mib(b float64) float64 { return b / (1 << 20) }

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// machineCPU reads the first line of /proc/stat: busy and total jiffies of
// all cores together.
func machineCPU() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		// idle and iowait
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy, total
}

// cpuOf sums the CPU time of processes by PID (0 for any that is gone).
func cpuOf(pids ...int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		if d, err := procstat.CPU(pid); err == nil {
			sum += d
		}
	}
	return sum
}
