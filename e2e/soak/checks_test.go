package soak_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// checkPushes checks every push against what the origin serves now: a
// completed push has its manifest under its tag and its blobs whole; a
// failed one has its manifest either absent or whole (the origin may have
// stored it before the answer was lost) and each blob either absent or
// whole. Anything else (an error status, other bytes) fails the test.
func (d *deployment) checkPushes(records []pushRecord) {
	t := d.t
	t.Helper()
	var failures []error
	var mu sync.Mutex
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		t.Errorf(format, args...)
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, r := range records {
		if r.err != nil {
			failures = append(failures, fmt.Errorf("[%s] %w", r.phase, r.err))
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			what := fmt.Sprintf("%s:%s (push %s)", r.repo, r.tag, map[bool]string{true: "completed", false: "failed: " + fmt.Sprint(r.err)}[r.err == nil])
			status, body, err := d.get("/v2/"+r.repo+"/manifests/"+r.tag, "Accept", mediaTypeManifest)
			switch {
			case err != nil:
				problem("%s: reading the manifest back: %v", what, err)
				return
			case status == http.StatusOK && !bytes.Equal(body, r.manifest):
				problem("%s: the manifest under the tag is not the one pushed: %.200s", what, body)
				return
			case status == http.StatusNotFound && r.err == nil:
				problem("%s: the manifest is gone", what)
				return
			case status != http.StatusOK && status != http.StatusNotFound:
				problem("%s: GET manifest answered %d: %.200s", what, status, body)
				return
			}
			tagged := status == http.StatusOK
			for _, b := range r.blobs {
				status, body, err := d.get("/v2/" + b.repo + "/blobs/" + b.digest.String())
				switch {
				case err != nil:
					problem("%s: reading blob %s back: %v", what, b.digest, err)
				case status == http.StatusOK && (digest.FromBytes(body) != b.digest || int64(len(body)) != b.size):
					problem("%s: blob %s is visible half-written or wrong: %d bytes of %s", what, b.digest, len(body), digest.FromBytes(body))
				case status == http.StatusNotFound && tagged:
					problem("%s: the manifest is visible but its blob %s is not", what, b.digest)
				case status != http.StatusOK && status != http.StatusNotFound:
					problem("%s: GET blob %s answered %d: %.200s", what, b.digest, status, body)
				}
			}
		})
	}
	wg.Wait()
	d.logf("checked %d pushes: %d completed, %d failed cleanly:%s", len(records), len(records)-len(failures), len(failures), errorsSummary(failures, 12))
	if len(failures) == len(records) {
		t.Error("no push completed: the soak proved nothing")
	}
}

// checkStoredBlobs hashes every blob in the origin's storage (registry:2's
// layout, docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data): a blob is
// only ever visible whole, whatever failed while it was pushed.
func (d *deployment) checkStoredBlobs() {
	t := d.t
	t.Helper()
	files, err := filepath.Glob(filepath.Join(d.storage, "docker/registry/v2/blobs/sha256/*/*/data"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		want := "sha256:" + filepath.Base(filepath.Dir(f))
		got, err := fileDigest(f)
		if err != nil {
			t.Errorf("reading stored blob %s: %v", want, err)
		} else if got != want {
			t.Errorf("stored blob %s holds bytes of digest %s: a blob became visible half-written", want, got)
		}
	}
	d.logf("every one of the %d blobs in storage matches its digest", len(files))
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// checkEveryAgentServes pulls every layer, and a blob pushed after the
// faults (which must go through the restarted tracker and the P2P path
// afresh), through every agent: each must serve again once the faults are
// over.
func (d *deployment) checkEveryAgentServes() {
	t := d.t
	t.Helper()
	fresh := d.pushBlob("soak/after", randomBytes(99, 6<<20))
	var wg sync.WaitGroup
	for a := range d.agents {
		for _, l := range append(append([]blob(nil), d.layers...), fresh) {
			wg.Go(func() {
				r := d.pull(t.Context(), a, l)
				switch {
				case r.err != nil:
					t.Errorf("after the faults, agent %d failed to serve %s: %v", a, l.digest, r.err)
				case r.got != l.digest.String() || r.bytes != l.size:
					t.Errorf("after the faults, agent %d served %d bytes of %s for %s", a, r.bytes, r.got, l.digest)
				}
			})
		}
	}
	wg.Wait()
}

// rss is the resident set of each process, by name.
type rss map[string]int64

func (r rss) String() string {
	var names []string
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.0f MiB", n, float64(r[n])/(1<<20)))
	}
	return strings.Join(parts, ", ")
}

func (d *deployment) processes() map[string]*testenv.Process {
	ps := map[string]*testenv.Process{"origin": d.origin.Process, "tracker": d.tracker.Process}
	for i, a := range d.agents {
		ps["agent-"+strconv.Itoa(i)] = a.Process
	}
	return ps
}

func (d *deployment) rssAll() rss {
	d.t.Helper()
	out := rss{}
	for name, p := range d.processes() {
		n, err := vmRSS(p.PID())
		if err != nil {
			d.t.Fatalf("reading the RSS of %s: %v", name, err)
		}
		out[name] = n
	}
	return out
}

// vmRSS reads VmRSS from /proc/<pid>/status, in bytes.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// memorySlack is how far above its warm-up RSS a process may stay once the
// load is over. The load holds 125 client connections per agent, each with
// buffers, goroutine stacks and pieces in flight, and the Go runtime hands
// freed memory back to the kernel only gradually (the background
// scavenger, after a GC that an idle process runs at most every two
// minutes), so some of the peak may stay resident for a while: 32 MiB and
// a quarter of the baseline. What the check is for is memory that grows
// with the work done, a leak: the soak runs many thousand requests, so a
// leak of a few KiB per request shows well over this.
func memorySlack(baseline int64) int64 { return 32<<20 + baseline/4 }

// checkMemory waits for the origin and the agents that ran throughout to
// return near their RSS after the warm-up (the killed agent started afresh
// and the restarted tracker have no baseline to return to).
func (d *deployment) checkMemory(baseline rss, victim int) {
	t := d.t
	t.Helper()
	var now rss
	settled := func() bool {
		now = d.rssAll()
		for name, base := range baseline {
			if name == "tracker" || name == "agent-"+strconv.Itoa(victim) {
				continue
			}
			if now[name] > base+memorySlack(base) {
				return false
			}
		}
		return true
	}
	if err := eventually.Wait(phaseTimeout, settled); err != nil {
		t.Errorf("RSS has not returned near the warm-up baseline after the load (%v):\n baseline: %s\n now:      %s",
			err, baseline, now)
		return
	}
	d.logf("RSS after the load: %s", now)
}

// checkLogs fails the test for a panic, a fatal runtime error or a data
// race in any process's log.
func (d *deployment) checkLogs() {
	t := d.t
	t.Helper()
	for name, p := range d.processes() {
		b, err := os.ReadFile(p.LogPath)
		if err != nil {
			t.Errorf("reading the log of %s: %v", name, err)
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, bad := range []string{"panic:", "panic serving", "fatal error:", "WARNING: DATA RACE"} {
				if strings.Contains(line, bad) {
					t.Errorf("%s logged %q: %.300s", name, bad, line)
				}
			}
		}
	}
}
