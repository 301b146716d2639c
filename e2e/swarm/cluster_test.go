// Package swarm_test runs Shoal's P2P distribution as separate processes
// on loopback: a tracker, one or two origin nodes with their seeders, and
// many peer-agents that all pull one layer through their mirror HTTP API
// at once, with and without faults (agents killed mid-transfer, a peer
// serving corrupt pieces, the tracker stopped, an origin owner killed, a
// peer that never answers). Every test ends with every pull complete and
// checked against the layer's digest.
package swarm_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// pullTimeout bounds one agent's pull of the layer, faults included. The
// agents are race-enabled binaries sharing two busy cores, hence generous.
const pullTimeout = 3 * time.Minute

// faultConfig is the agents' config of the fault tests.
const faultConfig = testenv.FaultAgentConfig

// binaries are built once per test binary run: race-enabled when the
// test is (testenv.Binary), and plain.
type binaries struct{ origin, tracker, agent string }

var (
	raceBins, plainBins         binaries
	raceBinsOnce, plainBinsOnce sync.Once
)

func buildBinaries(t *testing.T, plain bool) binaries {
	t.Helper()
	if !plain {
		raceBinsOnce.Do(func() {
			raceBins = binaries{
				origin:  testenv.Binary(t, "origin"),
				tracker: testenv.Binary(t, "tracker"),
				agent:   testenv.Binary(t, "peer-agent"),
			}
		})
		if raceBins.agent == "" {
			t.Fatal("building the binaries failed in an earlier test")
		}
		return raceBins
	}
	plainBinsOnce.Do(func() {
		w := testenv.ForTest(t)
		var b binaries
		for _, x := range []struct {
			name string
			dst  *string
		}{{"origin", &b.origin}, {"tracker", &b.tracker}, {"peer-agent", &b.agent}} {
			bin, err := w.Build(t.Context(), x.name, testenv.BuildOptions{})
			if err != nil {
				t.Fatal(err)
			}
			*x.dst = bin
		}
		plainBins = b
	})
	if plainBins.agent == "" {
		t.Fatal("building the binaries failed in an earlier test")
	}
	return plainBins
}

// cluster is one test's tracker, origin nodes and agents.
type cluster struct {
	t       *testing.T
	bins    binaries
	dir     string
	tracker *testenv.TrackerServer
	origins []*testenv.SeedingOriginServer
	agents  []*testenv.AgentServer
	// agentOpts start agents[i] again (same name and cache) after a kill.
	agentOpts []testenv.AgentOptions
}

type clusterOptions struct {
	// plainBinaries runs binaries built without the race detector even
	// when the test has it.
	plainBinaries bool
	origins       int
	agents        int
	// agentConfig is the agents' YAML config file; empty: the defaults.
	agentConfig string
	// originConfig is the origins' YAML config file; empty: the defaults.
	originConfig string
	// agentArgs are extra peer-agent flags, e.g. an ingress limit that
	// makes a pull last long enough to break something in the middle.
	agentArgs []string
}

func startCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	c := &cluster{t: t, bins: buildBinaries(t, opts.plainBinaries), dir: testenv.TestDir(t)}
	tr, err := testenv.StartTracker(t.Context(), testenv.TrackerOptions{Binary: c.bins.tracker, Dir: filepath.Join(c.dir, "tracker")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tr.Stop(testenv.DefaultStopTimeout); err != nil {
			t.Errorf("stopping the tracker: %v", err)
		}
	})
	c.tracker = tr
	storage := "file://" + filepath.Join(c.dir, "storage")
	var originArgs []string
	if opts.originConfig != "" {
		config := filepath.Join(c.dir, "origin.yaml")
		if err := os.WriteFile(config, []byte(opts.originConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		originArgs = []string{"--config", config}
	}
	for i := range opts.origins {
		o := testenv.SeedingOrigin(t, testenv.SeedingOriginOptions{
			Binary:   c.bins.origin,
			Storage:  storage,
			Name:     fmt.Sprintf("origin-%d", i+1),
			Join:     clusterAddrs(c.origins),
			Trackers: []string{c.tracker.GRPCAddr},
			Dir:      filepath.Join(c.dir, fmt.Sprintf("origin-%d", i+1)),
			Args:     originArgs,
		})
		c.origins = append(c.origins, o)
	}
	if len(c.origins) > 1 {
		c.waitClusterMembers(len(c.origins))
	}
	args := opts.agentArgs
	if opts.agentConfig != "" {
		config := filepath.Join(c.dir, "agent.yaml")
		if err := os.WriteFile(config, []byte(opts.agentConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", config}, args...)
	}
	var seeders, registries []string
	for _, o := range c.origins {
		seeders = append(seeders, o.SeederAddr)
		registries = append(registries, o.URL())
	}
	registry := registries[0]
	if len(registries) > 1 {
		registry = startBalancer(t, registries)
	}
	for i := range opts.agents {
		c.agentOpts = append(c.agentOpts, testenv.AgentOptions{
			Binary: c.bins.agent,
			Name:   strconv.Itoa(i),
			// The registry API of several nodes is behind a balancer,
			// as in production; pieces come from every seeder.
			Origin:   registry,
			Seeders:  seeders,
			Trackers: []string{c.tracker.GRPCAddr},
			Dir:      filepath.Join(c.dir, "agents"),
			Args:     args,
		})
	}
	if err := os.MkdirAll(filepath.Join(c.dir, "agents"), 0o755); err != nil {
		t.Fatal(err)
	}
	c.agents = make([]*testenv.AgentServer, opts.agents)
	// Registered after the tracker's and origins' cleanups, so it runs
	// before them: agents stop while their peers are still up.
	t.Cleanup(c.stopAgents)
	c.startAgents(allIndexes(opts.agents))
	return c
}

func clusterAddrs(origins []*testenv.SeedingOriginServer) []string {
	var addrs []string
	for _, o := range origins {
		addrs = append(addrs, o.ClusterAddr)
	}
	return addrs
}

func allIndexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// startAgents starts the agents with the given indexes in parallel (each
// takes a second or more to start under the race detector) and stops them
// when the test ends.
func (c *cluster) startAgents(indexes []int) {
	c.t.Helper()
	errs := make([]error, len(indexes))
	var wg sync.WaitGroup
	for k, i := range indexes {
		wg.Go(func() {
			// Twenty agents picking two free ports each at once can
			// collide on one (a port is free only until someone binds
			// it), and the agent then exits at start; so start again.
			for attempt := 1; ; attempt++ {
				a, err := testenv.StartAgent(c.t.Context(), c.agentOpts[i])
				if err == nil {
					c.agents[i] = a
					return
				}
				if attempt == 3 || !strings.Contains(err.Error(), "exited before becoming ready") {
					errs[k] = err
					return
				}
				c.t.Logf("agent %d exited at start, starting it again: %v", i, err)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.t.Fatal(err)
		}
	}
}

// stopAgents stops every agent at once (one by one, a few stuck agents
// would each take the full SIGTERM grace) and fails the test for any that
// did not stop cleanly. An agent killed by the test, and started again or
// not, counts as stopped.
func (c *cluster) stopAgents() {
	var wg sync.WaitGroup
	errs := make([]error, len(c.agents))
	for i, a := range c.agents {
		if a == nil {
			continue
		}
		wg.Go(func() {
			if err := a.Stop(testenv.DefaultStopTimeout); err != nil {
				errs[i] = fmt.Errorf("stopping %s: %w\n%s", a.Name, err, a.LogTail(20))
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.t.Error(err)
		}
	}
}

// waitClusterMembers waits until every origin sees n members, so that
// they agree on the owners of the layer before agents ask.
func (c *cluster) waitClusterMembers(n int) {
	c.t.Helper()
	// seen is what each origin last reported: its member count, or why
	// its metrics could not be read.
	seen := make([]string, len(c.origins))
	if err := eventually.Wait(eventually.Timeout, func() bool {
		ok := true
		for i, o := range c.origins {
			m, err := testenv.ScrapeMetrics(c.t.Context(), o.URL()+"/metrics")
			if err != nil {
				seen[i], ok = err.Error(), false
				continue
			}
			got := m.Sum("shoal_origin_cluster_members")
			seen[i] = strconv.FormatFloat(got, 'f', -1, 64)
			ok = ok && got == float64(n)
		}
		return ok
	}); err != nil {
		c.t.Fatalf("origin nodes do not all see %d cluster members (%v); each sees: %s", n, err, strings.Join(seen, ", "))
	}
}

// layer is a blob pushed to the origin.
type layer struct {
	repo   string
	digest digest.Digest
	size   int64
}

// pushLayer uploads size random bytes to the origin as a blob of repo
// (monolithic POST then PUT, as a client pushing a layer does).
func (c *cluster) pushLayer(repo string, size int64) layer {
	c.t.Helper()
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte(seed()))
	_, _ = rng.Read(data)
	d := digest.FromBytes(data)
	base := c.origins[0].URL()
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "application/octet-stream", nil)
	if err != nil {
		c.t.Fatalf("starting an upload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		c.t.Fatalf("POST upload: %s", resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		c.t.Fatalf("upload location: %v", err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(c.t.Context(), http.MethodPut, loc.String(), bytes.NewReader(data))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("uploading the layer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		c.t.Fatalf("PUT upload: %s", resp.Status)
	}
	return layer{repo: repo, digest: d, size: size}
}

func seed() []byte {
	var b [32]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b[:]
}

// pullResult is one agent's pull.
type pullResult struct {
	agent  int
	bytes  int64
	digest string
	err    error
	took   time.Duration
}

// pull GETs the layer from agent i's mirror and hashes what it streams.
func (c *cluster) pull(ctx context.Context, i int, l layer) (r pullResult) {
	start := time.Now()
	r.agent = i
	defer func() { r.took = time.Since(start) }()
	ctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	url := c.agents[i].URL() + "/v2/" + l.repo + "/blobs/" + l.digest.String()
	r.bytes, r.digest, r.err = testenv.GetDigest(ctx, http.DefaultClient, url)
	return r
}

// pulls is a set of pulls running at once.
type pulls struct {
	results chan pullResult
	n       int
	// ended[i] is set when agent i's pull has returned.
	ended []atomic.Bool
}

// startPulls starts a pull on each of the given agents at once.
func (c *cluster) startPulls(indexes []int, l layer) *pulls {
	p := &pulls{results: make(chan pullResult, len(indexes)), n: len(indexes), ended: make([]atomic.Bool, len(c.agents))}
	for _, i := range indexes {
		go func() {
			r := c.pull(c.t.Context(), i, l)
			p.ended[i].Store(true)
			p.results <- r
		}()
	}
	return p
}

// running returns the agents whose pulls are still running, failing the
// test when none is: a fault injected now would hit no transfer.
func (p *pulls) running(t *testing.T) []int {
	t.Helper()
	var idx []int
	for i := range p.ended {
		if !p.ended[i].Load() {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		t.Fatal("every pull ended before the fault: it would hit no transfer")
	}
	if len(idx) < p.n {
		t.Logf("%d of %d pulls ended before the fault", p.n-len(idx), p.n)
	}
	return idx
}

// wait collects the results, keyed by agent.
func (p *pulls) wait() map[int]pullResult {
	out := map[int]pullResult{}
	for range p.n {
		r := <-p.results
		out[r.agent] = r
	}
	return out
}

// checkPulls fails the test for every pull that failed or returned other
// bytes than the layer's.
func (c *cluster) checkPulls(results map[int]pullResult, l layer) {
	c.t.Helper()
	var slowest time.Duration
	for i, r := range results {
		switch {
		case r.err != nil:
			c.t.Errorf("agent %d: pull failed after %s, %d bytes: %v\n%s", i, r.took, r.bytes, r.err, c.agents[i].LogTail(15))
		case r.digest != l.digest.String() || r.bytes != l.size:
			c.t.Errorf("agent %d served %d bytes with digest %s, want %d bytes with %s", i, r.bytes, r.digest, l.size, l.digest)
		}
		slowest = max(slowest, r.took)
	}
	c.t.Logf("%d pulls of %d MiB, slowest %s", len(results), l.size>>20, slowest.Round(time.Millisecond))
}

// egress is what the origins sent: by their seeders (P2P) and as blob
// bodies of their registry API.
type egress struct{ seeder, http float64 }

func (e egress) total() float64 { return e.seeder + e.http }

func (e egress) sub(o egress) egress { return egress{e.seeder - o.seeder, e.http - o.http} }

// originEgress sums the egress counters of the origins still running.
func (c *cluster) originEgress() egress {
	c.t.Helper()
	var sum egress
	for _, o := range c.origins {
		if o.Exited() {
			continue
		}
		m, err := testenv.ScrapeMetrics(c.t.Context(), o.URL()+"/metrics")
		if err != nil {
			c.t.Fatal(err)
		}
		sum.seeder += m.Sum("shoal_origin_seeder_egress_bytes_total")
		sum.http += m.Sum("shoal_origin_http_response_bytes_total", "handler", "blob")
	}
	return sum
}

// agentSum sums a metric over the running agents, scraping them all at
// once (one by one takes seconds on a loaded machine, long enough for a
// pull to end).
func (c *cluster) agentSum(name string, labels ...string) float64 {
	c.t.Helper()
	sums := make([]float64, len(c.agents))
	var wg sync.WaitGroup
	for i, a := range c.agents {
		if a == nil || a.Exited() {
			continue
		}
		wg.Go(func() {
			// An agent being killed does not answer; it counts as 0.
			if m, err := testenv.ScrapeMetrics(c.t.Context(), a.URL()+"/metrics"); err == nil {
				sums[i] = m.Sum(name, labels...)
			}
		})
	}
	wg.Wait()
	var sum float64
	for _, v := range sums {
		sum += v
	}
	return sum
}

// waitProgress waits until the running agents together have received
// frac of n copies of the layer, so that a fault lands mid-transfer.
func (c *cluster) waitProgress(l layer, n int, frac float64) {
	c.t.Helper()
	want := frac * float64(n) * float64(l.size)
	var got float64
	if err := eventually.Wait(pullTimeout, func() bool {
		got = c.agentSum("shoal_agent_downloaded_bytes_total")
		return got >= want
	}); err != nil {
		c.t.Fatalf("agents received only %.0f of %.0f bytes: %v", got, want, err)
	}
	c.t.Logf("fault after %.0f MiB received by the agents (%.0f%% of all pulls)", got/(1<<20), 100*got/(float64(n)*float64(l.size)))
}

// grepAgentLogs returns up to n log lines of the agents containing s,
// for failure messages.
func (c *cluster) grepAgentLogs(s string, n int) string {
	var out []string
	for _, a := range c.agents {
		if a == nil {
			continue
		}
		b, err := os.ReadFile(a.LogPath)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, s) && len(out) < n {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "\n")
}
