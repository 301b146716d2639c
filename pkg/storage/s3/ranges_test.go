package s3

import (
	"context"
	"net/url"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore/objectstoretest"
)

// TestRangeOpener checks the ranged reads of large objects against the
// store's server: ranges, sizes, versions, and pinning (If-Match).
func TestRangeOpener(t *testing.T) {
	d := newDriver(t)
	objectstoretest.RangeOpener(t, d, d.(*s3Driver).Ranges())
}

// TestLargeReads reads an object of several ranges through Reader, with
// ranges of 1 MiB, 4 in flight.
func TestLargeReads(t *testing.T) {
	u, err := url.Parse(store.FreshURL(t) + "&" + objectstoretest.LargeReadsParams)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	objectstoretest.LargeReads(t, d)
}
