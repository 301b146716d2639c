package objectstore

import (
	"testing"

	"github.com/shoal-dev/shoal/e2e/conformance"
	"github.com/shoal-dev/shoal/e2e/testenv"
)

// TestOriginPassesOCIConformance runs the OCI distribution-spec conformance
// suite, every workflow and data set, against an origin on each object
// store, as on the filesystem (e2e/conformance).
func TestOriginPassesOCIConformance(t *testing.T) {
	eachStore(t, func(t *testing.T, o *testenv.ObjectStore) {
		conformance.VerifyOrigin(t, o.StorageURL("/shoal"))
	})
}
