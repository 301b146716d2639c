package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

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
