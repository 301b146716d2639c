package azure

import (
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore/objectstoretest"
)

// TestRangeOpener checks the ranged reads of large objects against the
// store's server: ranges, sizes, versions, and pinning (If-Match).
func TestRangeOpener(t *testing.T) {
	d := newDriver(t)
	objectstoretest.RangeOpener(t, d, d.(*azureDriver).Ranges())
}

// TestLargeReads reads objects of several ranges through Reader.
func TestLargeReads(t *testing.T) {
	objectstoretest.LargeReads(t, store.FreshURL(t), Open)
}
