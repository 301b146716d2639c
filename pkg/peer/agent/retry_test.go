package agent

import "testing"

// TestMetainfoRetriedWhenTheSeederAsks: a seeder refusing GetMetainfo with
// RESOURCE_EXHAUSTED and a RetryInfo (an origin's cold-metainfo rate
// limit) is asked again after the delay it names, and the client's pull
// completes instead of failing with a 503.
func TestMetainfoRetriedWhenTheSeederAsks(t *testing.T) {
	o := startOrigin(t)
	tr := startTracker(t)
	layer := randomBytes(1<<20, 11)
	layerD := o.pushBlob("team/app", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	seeder.announce(tr.addr, layerD, true)
	seeder.refuseMetainfo.Store(2)

	a := startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, []string{tr.addr}))
	pullBlob(t, a, "team/app", layerD)
	if got := seeder.metainfoCalls.Load(); got != 3 {
		t.Errorf("the seeder got %d GetMetainfo calls, want 3: two refused with a RetryInfo, the third answered", got)
	}
}
