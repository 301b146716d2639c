package swarm_test

import (
	"testing"
)

// layerSize is the 64 MiB layer; faultLayerSize is smaller so that
// the fault tests, each with its own cluster, fit CI's time.
const (
	layerSize      = 64 << 20
	faultLayerSize = 32 << 20
	swarmAgents    = 20
	faultAgents    = 12
)

func TestTwentyAgentsPullOneLayerAndTheOriginSendsItAboutOnce(t *testing.T) {
	// Plain binaries: twenty race-enabled agents on two cores are starved
	// for CPU (pulls take minutes), time pieces out and ask the origin
	// again, so the figure would measure the race detector. The fault
	// tests run race-enabled agents.
	c := startCluster(t, clusterOptions{origins: 1, agents: swarmAgents, plainBinaries: true})
	l := c.pushLayer("library/swarm", layerSize)
	before := c.originEgress()

	results := c.startPulls(allIndexes(swarmAgents), l).wait()
	c.checkPulls(results, l)

	e := c.originEgress().sub(before)
	egress := e.total()
	t.Logf("origin egress %.1f MiB = %.2f x the layer (seeders %.1f MiB, registry API blobs %.1f MiB); agents received %.0f MiB from peers, %.0f MiB from origin seeders, discarded %.0f MiB",
		egress/(1<<20), egress/float64(l.size), e.seeder/(1<<20), e.http/(1<<20),
		c.agentSum("shoal_agent_downloaded_bytes_total", "source", "peer")/(1<<20),
		c.agentSum("shoal_agent_downloaded_bytes_total", "source", "origin")/(1<<20),
		c.agentSum("shoal_agent_discarded_bytes_total")/(1<<20))
	if egress > 2*float64(l.size) {
		t.Errorf("the origin sent %.0f bytes for a %d-byte layer pulled by %d agents: %.2f x, want at most 2 x",
			egress, l.size, swarmAgents, egress/float64(l.size))
	}
	if egress < float64(l.size) {
		t.Errorf("the origin's egress counters show %.0f bytes, less than the layer's %d: the metrics miss what was sent", egress, l.size)
	}
}
