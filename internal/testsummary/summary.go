package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output and build-fail
}

// summary prints a test run as it goes and counts its outcomes.
type summary struct {
	w io.Writer
	// pending holds each running test's output until it ends: printed if
	// it failed or was skipped, dropped if it passed.
	pending map[string][]string
	// run, failed and skipped count tests, subtests included.
	run, failed, skipped int
	packages, pkgFailed  int
	failures             []string
}

func newSummary(w io.Writer) *summary {
	return &summary{w: w, pending: map[string][]string{}}
}

func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not an event: go test's own words, passed through.
			fmt.Fprintf(s.w, "%s\n", line)
			continue
		}
		s.event(e)
	}
	return sc.Err()
}

func (s *summary) event(e event) {
	switch {
	case e.Action == "build-output":
		fmt.Fprint(s.w, e.Output)
	case e.Test == "":
		s.packageEvent(e)
	default:
		s.testEvent(e)
	}
}

func (s *summary) packageEvent(e event) {
	switch e.Action {
	case "output":
		// The package's own lines: "ok  pkg 1.2s", "FAIL pkg", a panic
		// outside any test. The bare PASS a passing binary prints first
		// says nothing the ok line does not.
		if e.Output != "PASS\n" {
			fmt.Fprint(s.w, e.Output)
		}
	case "pass", "skip":
		s.packages++
	case "fail":
		s.packages++
		s.pkgFailed++
	}
}

func (s *summary) testEvent(e event) {
	key := e.Package + " " + e.Test
	switch e.Action {
	case "run":
		s.run++
	case "output":
		s.pending[key] = append(s.pending[key], e.Output)
	case "pass":
		delete(s.pending, key)
	case "skip":
		s.skipped++
		s.flush(key)
	case "fail":
		s.failed++
		s.failures = append(s.failures, e.Package+" "+e.Test)
		s.flush(key)
	}
}

func (s *summary) flush(key string) {
	for _, line := range s.pending[key] {
		fmt.Fprint(s.w, line)
	}
	delete(s.pending, key)
}

// total prints the failed tests again, after everything else, and the
// total line.
func (s *summary) total() {
	if len(s.failures) > 0 {
		sort.Strings(s.failures)
		fmt.Fprintf(s.w, "\nfailed tests:\n  %s\n", strings.Join(s.failures, "\n  "))
	}
	fmt.Fprintf(s.w, "\ntotal: %d tests run, %d failed, %d skipped (subtests counted); packages: %d, %d failed\n",
		s.run, s.failed, s.skipped, s.packages, s.pkgFailed)
}
