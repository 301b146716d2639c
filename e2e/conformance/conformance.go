// Package conformance runs the OCI distribution-spec conformance suite
// (testenv.ConformanceSuite) against a registry and reads its JUnit report.
//
// Verify is the hook for any test that has a registry to check: it runs the
// suite with every API workflow and data set on and fails the test on any
// failure. VerifyOrigin also starts the origin, so the same suite covers
// every storage backend:
//
//	conformance.VerifyOrigin(t, "hdfs://127.0.0.1:8020/shoal")
package conformance

import (
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// Env is the suite's configuration: spec version 1.1, plain HTTP, and
// every OCI_API_* workflow and OCI_DATA_* data set on, including those off
// by default in 1.1 (upload cancel, digest headers, tag parameters, sparse
// manifests).
func Env(registry, resultsDir string) []string {
	return []string{
		"OCI_VERSION=1.1",
		"OCI_REGISTRY=" + registry,
		"OCI_TLS=disabled",
		"OCI_RESULTS_DIR=" + resultsDir,
		"OCI_REPO1=conformance/repo1",
		"OCI_REPO2=conformance/repo2",
		"OCI_LOG=warn",

		"OCI_API_PING=true",
		"OCI_API_PULL=true",
		"OCI_API_PUSH=true",
		"OCI_API_BLOBS_ATOMIC=true",
		"OCI_API_BLOBS_DELETE=true",
		"OCI_API_BLOBS_DIGEST_HEADER=true",
		"OCI_API_BLOBS_MOUNT_ANONYMOUS=true",
		"OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_API_MANIFESTS_ATOMIC=true",
		"OCI_API_MANIFESTS_DELETE=true",
		"OCI_API_MANIFESTS_DIGEST_HEADER=true",
		"OCI_API_MANIFESTS_TAG_PARAM=true",
		"OCI_API_TAGS_ATOMIC=true",
		"OCI_API_TAGS_DELETE=true",
		"OCI_API_TAGS_LIST=true",
		"OCI_API_REFERRER=true",

		"OCI_DATA_IMAGE=true",
		"OCI_DATA_INDEX=true",
		"OCI_DATA_INDEX_LIST=true",
		"OCI_DATA_SPARSE=true",
		"OCI_DATA_ARTIFACT=true",
		"OCI_DATA_SUBJECT=true",
		"OCI_DATA_SUBJECT_MISSING=true",
		"OCI_DATA_ARTIFACT_LIST=true",
		"OCI_DATA_SUBJECT_LIST=true",
		"OCI_DATA_DATA_FIELD=true",
		"OCI_DATA_NONDISTRIBUTABLE=true",
		"OCI_DATA_CUSTOM_FIELDS=true",
		"OCI_DATA_NO_LAYERS=true",
		"OCI_DATA_EMPTY_BLOB=true",
		"OCI_DATA_SHA512=true",
	}
}

// Options describes one run of the suite.
type Options struct {
	// Binary is the conformance program (testenv.ConformanceSuite).
	Binary string
	// Registry is host:port of a registry served over plain HTTP.
	Registry string
	// ResultsDir receives junit.xml, results.yaml, report.html and the
	// program's output (stdout.txt, stderr.txt). It should be empty.
	ResultsDir string
	// Env is added after Env(Registry, ResultsDir), so it can turn a
	// setting off: "OCI_DATA_SPARSE=false".
	Env []string
	// Timeout bounds the run; zero means 15 minutes.
	Timeout time.Duration
}

// Result is what the suite reported.
type Result struct {
	// Counts over all tests, as the suite's own summary counts them.
	Total, Passed, Failed, Errors, Skipped, Disabled int
	// Failures names each failed or errored test with its messages.
	Failures []Failure
	// Summary is the suite's printed summary from "OCI Conformance Result"
	// on: counts and the status of every API and data set.
	Summary string
	// ResultsDir holds the reports.
	ResultsDir string
}

// Failure is one failed test case.
type Failure struct {
	Name    string
	Message string
}

// String gives the counts as one line.
func (r *Result) String() string {
	return fmt.Sprintf("%d passed, %d failed, %d errors, %d skipped, %d disabled, %d total",
		r.Passed, r.Failed, r.Errors, r.Skipped, r.Disabled, r.Total)
}

// Run runs the suite once and parses its JUnit report. A run that detects
// failures is not an error; a run that produces no report is.
func Run(ctx context.Context, opts Options) (*Result, error) {
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 15 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := os.MkdirAll(opts.ResultsDir, 0o755); err != nil {
		return nil, fmt.Errorf("running conformance: %w", err)
	}
	stdout, err := os.Create(filepath.Join(opts.ResultsDir, "stdout.txt"))
	if err != nil {
		return nil, fmt.Errorf("running conformance: %w", err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(opts.ResultsDir, "stderr.txt"))
	if err != nil {
		return nil, fmt.Errorf("running conformance: %w", err)
	}
	defer stderr.Close()

	cmd := exec.CommandContext(ctx, opts.Binary)
	// Run in the results directory so that no stray oci-conformance.yaml is
	// picked up, and drop inherited OCI_* variables for the same reason.
	cmd.Dir = opts.ResultsDir
	cmd.Env = append(withoutOCI(os.Environ()), Env(opts.Registry, opts.ResultsDir)...)
	cmd.Env = append(cmd.Env, opts.Env...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("running conformance against %s: %w", opts.Registry, ctx.Err())
	}
	res, err := ParseResults(opts.ResultsDir)
	if err != nil {
		// The program exits 1 on failures, which is not an error here;
		// without a report, its exit status and stderr say why.
		errOut, _ := os.ReadFile(stderr.Name())
		return nil, fmt.Errorf("running conformance against %s (%v): %w\n%s", opts.Registry, runErr, err, tail(string(errOut), 20))
	}
	return res, nil
}

func withoutOCI(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "OCI_") {
			out = append(out, kv)
		}
	}
	return out
}

type junitSuites struct {
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Disabled int          `xml:"disabled,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Cases []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string `xml:"name,attr"`
	Status    string `xml:"status,attr"`
	SystemOut string `xml:"system-out"`
}

// ParseResults reads junit.xml and the printed summary in dir.
func ParseResults(dir string) (*Result, error) {
	b, err := os.ReadFile(filepath.Join(dir, "junit.xml"))
	if err != nil {
		return nil, fmt.Errorf("reading conformance report: %w", err)
	}
	var j junitSuites
	if err := xml.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("parsing conformance report %s: %w", filepath.Join(dir, "junit.xml"), err)
	}
	if j.Tests == 0 {
		return nil, fmt.Errorf("conformance report %s counts no tests", filepath.Join(dir, "junit.xml"))
	}
	res := &Result{
		Total:      j.Tests,
		Failed:     j.Failures,
		Errors:     j.Errors,
		Skipped:    j.Skipped,
		Disabled:   j.Disabled,
		ResultsDir: dir,
	}
	res.Passed = res.Total - res.Failed - res.Errors - res.Skipped - res.Disabled
	for _, s := range j.Suites {
		for _, c := range s.Cases {
			if c.Status == "failure" || c.Status == "error" {
				res.Failures = append(res.Failures, Failure{Name: c.Name, Message: strings.TrimSpace(c.SystemOut)})
			}
		}
	}
	if out, err := os.ReadFile(filepath.Join(dir, "stdout.txt")); err == nil {
		if i := strings.Index(string(out), "OCI Conformance Result"); i >= 0 {
			res.Summary = strings.TrimSpace(string(out[i:]))
		}
	}
	return res, nil
}

// Verify runs the suite against registry (host:port) and fails the test
// if any test fails. The reports are kept under the workspace's
// .cache/e2e/conformance/<test name> for reading after the run.
func Verify(t testing.TB, registry string, env ...string) *Result {
	t.Helper()
	res, err := RunT(t, registry, env...)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed+res.Errors > 0 {
		t.Errorf("OCI conformance against %s: %s\n%s", registry, res, FormatFailures(res.Failures, 400))
	}
	return res
}

// VerifyOrigin runs the suite against origins on storage (a storage URL),
// twice, one origin after the other:
//
//   - strict: the origin as configured by default, which refuses manifests
//     whose blobs or child manifests were not pushed first, so the one data
//     set that needs them accepted (OCI_DATA_SPARSE) is off;
//   - sparse: an origin with registry.allowSparseManifests, with every
//     workflow and data set on.
//
// Each run uses its own repositories, so the first leaves the second a
// clean slate even on the same storage.
func VerifyOrigin(t *testing.T, storage string) {
	t.Helper()
	t.Run("strict", func(t *testing.T) {
		o := testenv.Origin(t, storage)
		Verify(t, o.Addr, "OCI_DATA_SPARSE=false", "OCI_REPO1=strict/repo1", "OCI_REPO2=strict/repo2")
	})
	t.Run("sparse", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "origin.yaml")
		if err := os.WriteFile(cfg, []byte("registry:\n  allowSparseManifests: true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		o := testenv.Origin(t, storage, "--config", cfg)
		Verify(t, o.Addr, "OCI_REPO1=sparse/repo1", "OCI_REPO2=sparse/repo2")
	})
}

// RunT runs the suite for a test and logs its summary, without judging the
// result.
func RunT(t testing.TB, registry string, env ...string) (*Result, error) {
	t.Helper()
	bin := testenv.Tool(t, testenv.ConformanceSuite)
	dir := filepath.Join(testenv.ForTest(t).Cache, "conformance", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clearing old conformance results: %w", err)
	}
	res, err := Run(t.Context(), Options{Binary: bin, Registry: registry, ResultsDir: dir, Env: env})
	if err != nil {
		return nil, err
	}
	t.Logf("OCI conformance against %s: %s (reports in %s)\n%s", registry, res, dir, res.Summary)
	return res, nil
}

// FormatFailures lists failed tests, one per distinct name with how often
// it failed and its first message cut to limit bytes.
func FormatFailures(fs []Failure, limit int) string {
	count := map[string]int{}
	first := map[string]string{}
	for _, f := range fs {
		if count[f.Name] == 0 {
			first[f.Name] = f.Message
		}
		count[f.Name]++
	}
	names := make([]string, 0, len(count))
	for n := range count {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		msg := first[n]
		if len(msg) > limit {
			msg = msg[:limit] + "…"
		}
		fmt.Fprintf(&b, "FAIL %s (x%d)\n    %s\n", n, count[n], strings.ReplaceAll(msg, "\n", "\n    "))
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
