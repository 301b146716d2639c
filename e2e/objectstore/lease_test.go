package objectstore

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/gc/leasetest"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/drivers"
)

// TestLeaseSafetyOnEachStore runs GC's lease safety suite (pkg/gc/leasetest)
// on each store's server, each driver as the origin opens it: the lease is
// kept with the store's conditional writes (S3 If-None-Match/If-Match, Azure
// ETag conditions, GCS generation preconditions), so racing nodes that all
// read the lease before writing it leave exactly one holder with no settle
// wait, and a holder taken over between its check and its write can neither
// renew nor release.
func TestLeaseSafetyOnEachStore(t *testing.T) {
	eachStore(t, func(t *testing.T, o *testenv.ObjectStore) {
		var stores atomic.Int32
		leasetest.Run(t, func(t *testing.T) storage.Driver {
			d, err := drivers.Open(t.Context(), o.StorageURL(fmt.Sprintf("/lease-%d", stores.Add(1))))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := storage.ConditionalWriterOf(d); !ok {
				t.Fatalf("the %s driver offers no conditional writes: GC's lease would fall back to settle-and-read-back", o.Kind)
			}
			return d
		}, leasetest.Options{})
	})
}
