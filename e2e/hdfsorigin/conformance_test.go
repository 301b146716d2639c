package hdfsorigin

import (
	"testing"

	"github.com/shoal-dev/shoal/e2e/conformance"
)

// TestOriginOnHDFSPassesOCIConformance runs the OCI distribution-spec
// conformance suite, every workflow and data set on as for the filesystem,
// against an origin whose storage is HDFS.
func TestOriginOnHDFSPassesOCIConformance(t *testing.T) {
	c := testCluster(t)
	p := newPhases(t)
	conformance.VerifyOrigin(t, c.URL("/conformance"))
	p.done("conformance suite")
}
