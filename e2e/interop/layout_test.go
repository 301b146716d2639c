package interop

import (
	"testing"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// The origin keeps registry:2's on-storage layout, so a site can point it
// at a directory registry:2 has been serving, and back.

func TestOriginServesWhatRegistry2Stored(t *testing.T) {
	dir := t.TempDir()
	reg := testenv.Registry(t, dir)
	f := pushFixture(t, reg.Addr)
	checkFixture(t, reg.Addr, f) // the fixture itself is sound
	_ = reg.Stop(testenv.DefaultStopTimeout)

	origin := testenv.Origin(t, "file://"+dir)
	checkFixture(t, origin.Addr, f)
}

func TestRegistry2ServesWhatOriginStored(t *testing.T) {
	dir := t.TempDir()
	origin := testenv.Origin(t, "file://"+dir)
	f := pushFixture(t, origin.Addr)
	checkFixture(t, origin.Addr, f)
	if err := origin.Stop(testenv.DefaultStopTimeout); err != nil {
		t.Fatalf("stopping the origin: %v", err)
	}

	reg := testenv.Registry(t, dir)
	checkFixture(t, reg.Addr, f)
}
