package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rss returns a process's resident set size in bytes.
func rss(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// rssSampler records the highest RSS of a process until stopped.
type rssSampler struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	peak  int64
}

func startRSSSampler(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stopc: make(chan struct{})}
	s.wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if v, err := rss(pid); err == nil && v > s.peak {
				s.peak = v
			}
			select {
			case <-s.stopc:
				return
			case <-tick.C:
			}
		}
	})
	return s
}

func (s *rssSampler) stop() int64 {
	close(s.stopc)
	s.wg.Wait()
	return s.peak
}

var storageCount = regexp.MustCompile(`^shoal_storage_operation_duration_seconds_count\{([^}]*)\} (\S+)$`)
var operationLabel = regexp.MustCompile(`operation="([^"]*)"`)

// storageOps reads the origin's storage driver operations so far, by
// operation (all outcomes together).
func storageOps(ctx context.Context, base string) (map[string]int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the origin's metrics: %w", err)
	}
	defer resp.Body.Close()
	if err := checkStatus(resp, http.StatusOK, "GET /metrics"); err != nil {
		return nil, err
	}
	ops := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := storageCount.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		op := operationLabel.FindStringSubmatch(m[1])
		n, err := strconv.ParseFloat(m[2], 64)
		if op == nil || err != nil {
			continue
		}
		ops[op[1]] += int64(n)
	}
	return ops, sc.Err()
}

// backgroundRPCs are namenode methods that no transfer causes: datanodes'
// heartbeats and reports, and the lease renewal every HDFS client sends
// once a second while it has files open (the origin's pooled clients send
// it always).
var backgroundRPCs = map[string]bool{
	"SendHeartbeat": true, "BlockReceivedAndDeleted": true, "BlockReport": true, "CacheReport": true,
	"RegisterDatanode": true, "VersionRequest": true, "ErrorReport": true, "RenewLease": true,
	"SendLifeline": true,
}

// formatCounts prints counts as "name n, ..." sorted by name, with the total.
func formatCounts(m map[string]int64, skip map[string]bool) string {
	var names []string
	var total int64
	for k, v := range m {
		if skip[k] || v == 0 {
			continue
		}
		// The namenode also counts each method again as "Overall<Method>"
		// and each exception a call ended with: neither is another call.
		if skip != nil && (strings.HasPrefix(k, "Overall") || strings.HasSuffix(k, "Exception")) {
			continue
		}
		names = append(names, k)
		total += v
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}
