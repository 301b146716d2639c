package conformance

import (
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// TestOriginPassesOCIConformanceOnFilesystem is issue 2's bar: the origin on
// its embedded default storage passes every workflow and data set.
func TestOriginPassesOCIConformanceOnFilesystem(t *testing.T) {
	VerifyOrigin(t, "file://"+t.TempDir())
}

// TestHarnessSeesReferenceRegistryGaps runs the suite against registry:2,
// which lacks sha512 digests and the referrers API, to show that the harness
// reads failures from the report rather than passing whatever happens.
func TestHarnessSeesReferenceRegistryGaps(t *testing.T) {
	reg := testenv.Registry(t, t.TempDir())
	res, err := RunT(t, reg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if res.Passed < res.Total/2 {
		t.Errorf("registry:2 passed only %d of %d tests; the harness is probably misconfigured:\n%s", res.Passed, res.Total, res.Summary)
	}
	if res.Failed == 0 || len(res.Failures) == 0 {
		t.Fatalf("registry:2 reported no failures (%s), but it has neither sha512 nor referrers support", res)
	}
	for _, gap := range []string{"sha512", "referrers"} {
		found := false
		for _, f := range res.Failures {
			found = found || strings.Contains(f.Name, gap)
		}
		if !found {
			t.Errorf("no failed test named after %q among registry:2's %d failures:\n%s", gap, len(res.Failures), FormatFailures(res.Failures, 200))
		}
	}
}
