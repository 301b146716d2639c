package swarm_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// Hundreds of connections that open an Exchange stream on the origin's
// seeder and never send a first message do not stall the agents' P2P
// pulls: the seeder counts a stream against maxStreams only once its
// handshake is in. The seeder is given 64 slots against 300 silent
// streams, held for the whole test (handshakeTimeout 10m), so the slots
// and not the deadline are what is tested.
func TestPullsCompleteWhileSilentStreamsHoldTheSeeder(t *testing.T) {
	const silent = 300
	c := startCluster(t, clusterOptions{origins: 1, agents: 2, agentConfig: faultConfig,
		originConfig: "seeder:\n  maxStreams: 64\n  handshakeTimeout: 10m\n"})
	l := c.pushLayer("library/silentstreams", faultLayerSize)
	origin := c.origins[0]

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for i := range silent {
		conn, err := grpc.NewClient(origin.SeederAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := peerpb.NewPeerClient(conn).Exchange(ctx); err != nil {
			t.Fatalf("opening silent stream %d: %v", i, err)
		}
	}
	handshaking := func() float64 {
		m, err := testenv.ScrapeMetrics(t.Context(), origin.URL()+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		return m.Sum("shoal_origin_seeder_handshaking_streams")
	}
	if err := eventually.Wait(pullTimeout, func() bool { return handshaking() >= silent }); err != nil {
		t.Fatalf("the seeder holds %.0f silent streams, want %d: %v", handshaking(), silent, err)
	}

	before := c.originEgress()
	c.checkPulls(c.startPulls(allIndexes(2), l).wait(), l)
	sent := c.originEgress().sub(before)
	t.Logf("with %d silent streams open the seeder sent %.0f MiB, the registry API %.0f MiB", silent, sent.seeder/(1<<20), sent.http/(1<<20))
	if sent.seeder == 0 {
		t.Errorf("the seeder sent nothing: the agents' Exchange streams were refused while the silent ones held it")
	}
	if n := handshaking(); n < silent {
		t.Errorf("only %.0f of the %d silent streams were still open after the pulls: the test did not hold the seeder throughout", n, silent)
	}
}
