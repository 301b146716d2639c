package swarm_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// slowAgents caps each agent's ingress so that a 32 MiB pull takes at
// least 8 seconds: a fault injected at 10% progress then lands while
// (nearly) every pull is still running, even when the machine is too
// loaded to watch progress closely.
var slowAgents = []string{"--ingress-limit", "4MiB"}

// faultAt is the fraction of all pulls' bytes received when a fault is
// injected.
const faultAt = 0.1

func TestPullsCompleteWhenThirtyPercentOfAgentsAreKilledMidTransfer(t *testing.T) {
	c := startCluster(t, clusterOptions{origins: 1, agents: faultAgents, agentConfig: faultConfig, agentArgs: slowAgents})
	l := c.pushLayer("library/kill", faultLayerSize)

	p := c.startPulls(allIndexes(faultAgents), l)
	c.waitProgress(l, faultAgents, faultAt)
	// 30% of all agents, rounded up, among those still pulling.
	running := p.running(t)
	rand.Shuffle(len(running), func(i, j int) { running[i], running[j] = running[j], running[i] })
	victims := running[:min(len(running), (faultAgents*3+9)/10)]
	slices.Sort(victims)
	for _, i := range victims {
		c.agents[i].Kill()
	}
	t.Logf("killed agents %v (SIGKILL)", victims)
	results := p.wait()
	for _, i := range victims {
		delete(results, i) // their clients lost the connection with them
	}
	c.checkPulls(results, l)

	// A killed host comes back with the pieces it had on disk and
	// finishes its pull from the survivors. It comes back as a new peer
	// id, as an agent with the default (host name and a random suffix)
	// does.
	for _, i := range victims {
		o := &c.agentOpts[i]
		o.Args = append(slices.Clip(o.Args), "--peer-id", "agent-"+o.Name+"-restarted")
	}
	c.startAgents(victims)
	c.checkPulls(c.startPulls(victims, l).wait(), l)
}

func TestPullsCompleteDespiteAPeerServingCorruptPieces(t *testing.T) {
	c := startCluster(t, clusterOptions{origins: 1, agents: faultAgents, agentConfig: faultConfig})
	l := c.pushLayer("library/corrupt", faultLayerSize)
	bad := &corruptPeer{id: "corrupt-peer", meta: getMetainfo(t, c.origins[0], l)}
	announceAsComplete(t, c.tracker.GRPCAddr, bad.id, startCorruptPeer(t, bad), l)

	c.checkPulls(c.startPulls(allIndexes(faultAgents), l).wait(), l)

	rejected := c.agentSum("shoal_agent_pieces_rejected_total")
	blacklisted := c.agentSum("shoal_agent_peers_blacklisted_total", "reason", "corrupt")
	t.Logf("the corrupt peer sent %d pieces; agents rejected %.0f and blacklisted it %.0f times", bad.served.Load(), rejected, blacklisted)
	if bad.served.Load() == 0 {
		t.Error("no agent asked the corrupt peer for a piece: the test proved nothing")
	}
	if rejected == 0 || blacklisted == 0 {
		t.Errorf("agents rejected %.0f pieces and blacklisted %.0f peers as corrupt, want both > 0", rejected, blacklisted)
	}
	// Every rejected piece must have come from the corrupt peer: more
	// means an honest agent passed on bad bytes or sent a piece that does
	// not verify (and was blacklisted for it).
	if rejected > float64(bad.served.Load()) {
		t.Errorf("agents rejected %.0f pieces but the corrupt peer sent only %d: honest agents sent pieces that failed verification\n%s",
			rejected, bad.served.Load(), c.grepAgentLogs("corrupt piece", 8))
	}

}

func TestPullsCompleteWhenTheTrackerStopsMidTransfer(t *testing.T) {
	c := startCluster(t, clusterOptions{origins: 1, agents: faultAgents, agentConfig: faultConfig, agentArgs: slowAgents})
	l := c.pushLayer("library/notracker", faultLayerSize)

	p := c.startPulls(allIndexes(faultAgents), l)
	c.waitProgress(l, faultAgents, faultAt)
	p.running(t)
	if err := c.tracker.Stop(5 * time.Second); err != nil {
		t.Errorf("stopping the tracker: %v", err)
	}
	c.checkPulls(p.wait(), l)
}

func TestPullsCompleteWhenOneOfTwoOriginOwnersIsKilled(t *testing.T) {
	c := startCluster(t, clusterOptions{origins: 2, agents: faultAgents, agentConfig: faultConfig, agentArgs: slowAgents})
	l := c.pushLayer("library/owner", faultLayerSize)

	p := c.startPulls(allIndexes(faultAgents), l)
	c.waitProgress(l, faultAgents, faultAt)
	p.running(t)
	// Kill the owner that has sent more so far: the one the pulls lean
	// on. Both own the layer (two replicas); the agents reach the
	// registry API through a balancer in front of both.
	sent := make([]float64, len(c.origins))
	for i, o := range c.origins {
		m, err := testenv.ScrapeMetrics(t.Context(), o.URL()+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sent[i] = m.Sum("shoal_origin_seeder_egress_bytes_total")
	}
	victim := 0
	if sent[1] > sent[0] {
		victim = 1
	}
	c.origins[victim].Kill()
	t.Logf("origin seeders had sent %.0f and %.0f MiB; killed origin-%d (SIGKILL)", sent[0]/(1<<20), sent[1]/(1<<20), victim+1)
	c.checkPulls(p.wait(), l)
}

func TestPullsCompleteDespiteAPeerThatNeverAnswers(t *testing.T) {
	c := startCluster(t, clusterOptions{origins: 1, agents: faultAgents, agentConfig: faultConfig})
	l := c.pushLayer("library/silent", faultLayerSize)
	addr, accepted := startSilentPeer(t)
	announceAsComplete(t, c.tracker.GRPCAddr, "silent-peer", addr, l)

	c.checkPulls(c.startPulls(allIndexes(faultAgents), l).wait(), l)
	t.Logf("the silent peer accepted %d connections", accepted.Load())
	if accepted.Load() == 0 {
		t.Error("no agent connected to the silent peer: the test proved nothing")
	}
}
