package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunPrintsFailuresSkipsAndTheTotal(t *testing.T) {
	var out, errOut bytes.Buffer
	// A stand-in for go test: the recorded events of a run with a build
	// failure, a failing subtest, a skip and a passing package, and go
	// test's exit status.
	code := run([]string{"sh", "-c", "cat testdata/run.jsonl; exit 1"}, &out, &errOut)
	if code != 1 {
		t.Errorf("exit status %d, want go test's 1", code)
	}
	got := out.String()
	for _, want := range []string{
		"go: downloading example.com/x v1.0.0\n",
		"broken.go:3:1: syntax error\n",
		"FAIL\texample.com/broken [build failed]\n",
		"    a_test.go:9: got 1, want 2\n",
		"    a_test.go:20: no java on PATH\n",
		"ok  \texample.com/b\t0.02s\n",
		"failed tests:\n  example.com/a TestTable\n  example.com/a TestTable/one\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "--- PASS: TestGood") || strings.Contains(got, "PASS\n\nok") {
		t.Errorf("output shows a passing test's lines:\n%s", got)
	}
	const total = "\ntotal: 4 tests run, 2 failed, 1 skipped (subtests counted); packages: 3, 2 failed\n"
	if !strings.HasSuffix(got, total) {
		t.Errorf("output does not end with %q:\n%s", total, got)
	}
}

func TestRunFailsWhenATestFailedThoughGoTestExitedZero(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"sh", "-c", "cat testdata/run.jsonl"}, &out, &errOut); code != 1 {
		t.Errorf("exit status %d after failed tests, want 1", code)
	}
}
