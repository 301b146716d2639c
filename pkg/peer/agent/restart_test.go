package agent

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/rendezvous"
)

// TestRestartedAgentRejoinsTheSwarm: an agent with a fixed peer id hangs
// mid-pull (its uploads stop, so the others time out on it and drop it as
// unresponsive), is killed and restarted with the same peer id, address
// and cache, like a DaemonSet pod after an OOM kill or a node reboot. The
// restarted process must pull the layer to the end, and the agent that
// dropped its predecessor must take it back: it gets pieces from it while
// its own download still runs.
func TestRestartedAgentRejoinsTheSwarm(t *testing.T) {
	o := startOrigin(t)
	tr := startTracker(t)
	layer := randomBytes(8<<20, 21)
	layerD := o.pushBlob("team/app", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.setRate(1 << 20) // 8s for one copy of the layer
	seeder.add(layer)
	seeder.announce(tr.addr, layerD, true)

	// The agent to restart is the one the two pick to fetch from the
	// origin: the other defers to it and trades with it. Its upload bucket
	// holds the 1 MiB burst and then one byte a second, so it hangs as an
	// uploader while it keeps downloading.
	xcfg := testConfig(t, o.URL, []string{seeder.addr}, []string{tr.addr})
	xcfg.Swarm.PeerID = fetcherID(layerD, "node-a")
	xcfg.EgressLimit = 1
	x := startAgent(t, xcfg)
	cfg := testConfig(t, o.URL, []string{seeder.addr}, []string{tr.addr})
	cfg.Swarm.PeerID = "node-a"
	// Enough requests waiting at the hung agent to reach MaxTimeouts (3)
	// in one piece timeout.
	cfg.Swarm.MaxInFlightPerPeer = 8
	cfg.Swarm.PieceTimeout = 2 * time.Second
	a := startAgent(t, cfg)

	pulls := make(chan error, 2)
	go func() { pulls <- pullErr(a, layerD) }()
	go func() {
		// Cut when x is killed.
		if resp, err := http.Get(x.url("/v2/team/app/blobs/" + layerD.String())); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	eventually.True(t, "the other agent to drop the hung one as unresponsive", func() bool {
		return a.metric("shoal_agent_peers_blacklisted_total", "reason", "unresponsive") >= 1
	})
	// Keep the other downloading while the agent comes back: the origin
	// slows to two pieces a second.
	seeder.limit.SetLimit(rate.Limit(128 << 10))
	addr := x.PeerAddr()
	t.Logf("dropped as unresponsive; killing %s (%s) after %.0f bytes received", x.PeerID(), addr,
		x.metric("shoal_agent_downloaded_bytes_total"))
	x.shutdown()

	// The same host: same peer id, address and cache; healthy now.
	xcfg.EgressLimit = 0
	xcfg.PeerListen = addr
	x2 := startAgent(t, xcfg)
	start := time.Now()
	go func() { pulls <- pullErr(x2, layerD) }()

	// (b) The agent that dropped its predecessor takes pieces from it
	// (before the fix it refused it for the rest of its download).
	eventually.True(t, "the restarted agent to serve pieces to the other", func() bool {
		return x2.metric("shoal_agent_uploaded_bytes_total") > 0
	})
	t.Logf("restarted agent uploading %.1fs after its restart", time.Since(start).Seconds())
	seeder.limit.SetLimit(rate.Limit(8 << 20))

	// (a) Both pulls complete with the right digest.
	for range 2 {
		select {
		case err := <-pulls:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(90 * time.Second):
			t.Fatalf("pulls still running 90s after the restart")
		}
	}
	t.Logf("restarted agent done %.1fs after its restart: %.0f bytes from peers, %.0f from the origin, %.0f uploaded",
		time.Since(start).Seconds(), x2.metric("shoal_agent_downloaded_bytes_total", "source", "peer"),
		x2.metric("shoal_agent_downloaded_bytes_total", "source", "origin"), x2.metric("shoal_agent_uploaded_bytes_total"))
}

// fetcherID returns a peer id that ranks above others for d in the
// agents' choice of origin fetchers (scheduler.Fetcher).
func fetcherID(d digest.Digest, others ...string) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("node-x%d", i)
		if rendezvous.Above(d.String(), id, others) == 0 {
			return id
		}
	}
}

// pullErr pulls d through a's mirror and checks its digest, for use off
// the test goroutine.
func pullErr(a *testAgent, d digest.Digest) error {
	resp, err := http.Get(a.url("/v2/team/app/blobs/" + d.String()))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &pullError{a.PeerID(), resp.StatusCode, string(body)}
	}
	if got := digest.FromBytes(body); got != d {
		return &pullError{a.PeerID(), resp.StatusCode, "digest " + got.String()}
	}
	return nil
}

type pullError struct {
	peer   string
	status int
	body   string
}

func (e *pullError) Error() string {
	return "pull from " + e.peer + ": status " + http.StatusText(e.status) + ": " + e.body
}
