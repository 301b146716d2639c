package gc_test

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/pkg/gc/leasetest"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/filesystem"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// settleOnly hides a driver's conditional writes, as a driver without them
// looks to the lease.
type settleOnly struct{ storage.Driver }

// The lease's safety suite on every driver of this package's tests: with
// the conditional writes of the in-memory and filesystem drivers, and on
// settle-and-read-back where a driver has none. The object stores run it on
// their servers (e2e/objectstore).
func TestLeaseSafety(t *testing.T) {
	t.Run("inmemory", func(t *testing.T) {
		leasetest.Run(t, func(*testing.T) storage.Driver { return inmemory.New() }, leasetest.Options{Rounds: 20})
	})
	t.Run("filesystem", func(t *testing.T) {
		leasetest.Run(t, func(t *testing.T) storage.Driver {
			d, err := filesystem.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return d
		}, leasetest.Options{Rounds: 20})
	})
	t.Run("settle-and-read-back", func(t *testing.T) {
		leasetest.Run(t, func(*testing.T) storage.Driver { return settleOnly{inmemory.New()} },
			leasetest.Options{Rounds: 20, Settle: 20 * time.Millisecond})
	})
}
