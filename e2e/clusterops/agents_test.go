package clusterops_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// agentMetric reads one metric of an agent, labels as name, value pairs.
func agentMetric(t *testing.T, a *testenv.AgentServer, name string, labels ...string) float64 {
	t.Helper()
	m, err := testenv.ScrapeMetrics(t.Context(), a.URL()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m.Sum(name, labels...)
}

// TestPreheatWithAgentsLeavesTheImageInTheirCaches: `shoalctl preheat
// IMAGE --agents A,B` has the two agents (started with only --origin and
// --tracker) fetch every blob of the image into their piece stores, so
// that a pull through either is served from its cache; a second preheat
// finds them held, and an agent that cannot be reached fails the command
// with a line naming it.
func TestPreheatWithAgentsLeavesTheImageInTheirCaches(t *testing.T) {
	c := startCluster(t)
	img := c.pushImage(t, "pre/agents:v1")
	want := blobs(t, img)
	var agents []*testenv.AgentServer
	for i := range 2 {
		agents = append(agents, testenv.Agent(t, testenv.AgentOptions{
			Name:     fmt.Sprintf("a%d", i+1),
			Origin:   c.origins[0].URL(),
			Trackers: []string{c.tracker.GRPCAddr},
		}))
	}
	list := agents[0].Addr + "," + agents[1].Addr

	out, err := c.shoalctl(t, 0, "preheat", "pre/agents:v1", "--agents", list)
	t.Logf("shoalctl preheat --agents printed:\n%s", out)
	if err != nil {
		t.Fatalf("shoalctl preheat --agents: %v", err)
	}
	for _, a := range agents {
		if line := lineWith(out, "agent "+a.Addr+":"); !strings.Contains(line, fmt.Sprintf(": %d blobs fetched", len(want))) {
			t.Errorf("preheat's line for agent %s is %q, want %d blobs fetched", a.Addr, line, len(want))
		}
		if got := agentMetric(t, a, "shoal_agent_prefetches_total", "result", "fetched"); got != float64(len(want)) {
			t.Errorf("agent %s counted %v prefetched blobs, want %d", a.Addr, got, len(want))
		}
		if got := agentMetric(t, a, "shoal_agent_cache_blobs"); got != float64(len(want)) {
			t.Errorf("agent %s holds %v blobs after the preheat, want the image's %d", a.Addr, got, len(want))
		}
	}

	// The agents took the pieces from the origin seeders over the piece
	// data path, not their gRPC streams.
	if got := c.originSum(t, "shoal_origin_seeder_piece_data_path_bytes_total"); got == 0 {
		t.Errorf("the origin seeders sent no bytes over the piece data path to the prefetching agents")
	}

	// A pull of a layer through an agent is now a cache hit, with the
	// right bytes.
	layer := want[len(want)-1]
	resp, err := http.Get(agents[1].URL() + "/v2/pre/agents/blobs/" + layer)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	_, err = io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s through agent a2: %s, %v", layer, resp.Status, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != layer {
		t.Errorf("agent a2 served %s for %s", got, layer)
	}
	if got := agentMetric(t, agents[1], "shoal_agent_blob_cache_requests_total", "result", "hit"); got != 1 {
		t.Errorf("agent a2 served the prefetched layer with %v cache hits, want 1", got)
	}

	out, err = c.shoalctl(t, 1, "preheat", "pre/agents:v1", "--agents", agents[0].Addr)
	if err != nil {
		t.Fatalf("second shoalctl preheat --agents: %v\n%s", err, out)
	}
	if line := lineWith(out, "agent "+agents[0].Addr+":"); !strings.Contains(line, fmt.Sprintf(": 0 blobs fetched (0 B), %d held already", len(want))) {
		t.Errorf("second preheat's line for agent a1 is %q, want every blob held already", line)
	}

	// An address nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	out, err = c.shoalctl(t, 0, "preheat", "pre/agents:v1", "--agents", agents[0].Addr+","+dead)
	if err == nil {
		t.Fatalf("preheat with an unreachable agent succeeded:\n%s", out)
	}
	if line := lineWith(out, "agent "+dead+":"); !strings.Contains(line, fmt.Sprintf("%d of %d blobs failed", len(want), len(want))) {
		t.Errorf("preheat's line for the unreachable agent is %q, want every blob failed\n%s", line, out)
	}
	if !strings.Contains(out, "1 of 2 agents did not fetch every blob") {
		t.Errorf("preheat with an unreachable agent did not say how many agents failed:\n%s", out)
	}
}
