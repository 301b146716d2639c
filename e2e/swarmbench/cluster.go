package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// binaries are Shoal's commands, built without the race detector (this is
// a benchmark).
type binaries struct{ origin, tracker, agent string }

// launcher starts Shoal's processes, inside namespaces in netns mode, and
// remembers them so that every one is stopped (by PID) at the end.
type launcher struct {
	bins binaries
	dir  string
	// net is nil in loopback mode.
	net *netns
	// originConfig is extra origin arguments ("--config", path) or none.
	originConfig []string

	mu    sync.Mutex
	procs []*testenv.Process
}

// start runs bin with args (inside namespace ns in netns mode, through
// `ip netns exec`, which execs the binary: the PID is the server's own) and
// waits for GET readyURL to answer 200.
func (l *launcher) start(ctx context.Context, ns, name, bin string, args []string, readyURL string) (*testenv.Process, error) {
	o := testenv.Options{
		Name:    name,
		Path:    bin,
		Args:    args,
		LogPath: filepath.Join(l.dir, "logs", name+".log"),
		Ready:   testenv.HTTPReady(readyURL),
		// 50 agents starting on two busy cores.
		ReadyTimeout: 2 * time.Minute,
	}
	if l.net != nil {
		o.Path = "ip"
		o.Args = append([]string{"netns", "exec", ns, bin}, args...)
	}
	p, err := testenv.Start(ctx, o)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// stop stops processes in parallel (SIGTERM, SIGKILL after 10 s).
func stopAll(procs []*testenv.Process) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() {
			if err := p.Stop(10 * time.Second); err != nil {
				slog.Warn("stopping", "process", p.Name, "err", err)
			}
		})
	}
	wg.Wait()
}

func (l *launcher) stopEverything() {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	stopAll(procs)
}

// cluster is a tracker, one seeding origin and n agents.
type cluster struct {
	l *launcher
	// originURL is the registry API as the bench (root namespace) reaches it.
	originURL     string
	originMetrics string
	seeder        string
	tracker       string
	trackerHTTP   string
	trackerProc   *testenv.Process
	origin        *testenv.Process
	agents        []*agent
}

type agent struct {
	proc *testenv.Process
	// url is the mirror as the bench reaches it (metrics, readiness).
	url string
	// clientURL is the mirror as a client on the agent's own host reaches it.
	clientURL string
}

// addr returns host:port for a server: a fixed port on the namespace's
// address in netns mode, a free loopback port otherwise.
func (l *launcher) addr(ip string, port int) (string, error) {
	if l.net != nil {
		return ip + ":" + strconv.Itoa(port), nil
	}
	return testenv.FreeAddr()
}

// startCore starts the tracker and the origin with its seeder.
func (l *launcher) startCore(ctx context.Context, name string) (*cluster, error) {
	c := &cluster{l: l}
	var err error
	addrs := make([]string, 5)
	for i, port := range []int{7001, 7081, 5000, 7003, 7946} {
		if addrs[i], err = l.addr(originIP, port); err != nil {
			return nil, err
		}
	}
	c.tracker, c.trackerHTTP = addrs[0], addrs[1]
	originAddr := addrs[2]
	c.seeder = addrs[3]
	c.originURL = "http://" + originAddr
	c.originMetrics = c.originURL + "/metrics"
	if c.trackerProc, err = l.start(ctx, originNS, name+"-tracker", l.bins.tracker,
		[]string{"--listen", c.tracker, "--metrics-listen", c.trackerHTTP, "--log-format", "json"},
		"http://"+c.trackerHTTP+"/readyz"); err != nil {
		return nil, err
	}
	dir := filepath.Join(l.dir, name+"-origin")
	c.origin, err = l.start(ctx, originNS, name+"-origin", l.bins.origin, append([]string{
		"--listen", originAddr,
		"--storage", "file://" + filepath.Join(dir, "storage"),
		"--seeder-listen", c.seeder,
		"--cluster-bind", addrs[4],
		"--cluster-name", "origin-1",
		"--cache-dir", filepath.Join(dir, "seeder-cache"),
		"--tracker", c.tracker,
		"--log-format", "json",
	}, l.originConfig...), c.originURL+"/readyz")
	if err != nil {
		return nil, err
	}
	return c, nil
}

// agentConfig keeps the agents' production defaults except a shorter
// shutdown grace, so that stopping 50 of them does not take minutes.
const agentConfig = "shutdownGrace: 5s\n"

// startAgents starts n agents, a few at a time.
func (c *cluster) startAgents(ctx context.Context, name string, n int, configPath string, extra []string) error {
	l := c.l
	if configPath == "" {
		configPath = filepath.Join(l.dir, "agent.yaml")
		if err := os.WriteFile(configPath, []byte(agentConfig), 0o644); err != nil {
			return fmt.Errorf("writing the agent config: %w", err)
		}
	}
	c.agents = make([]*agent, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = c.startAgent(ctx, name, i, configPath, extra)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) startAgent(ctx context.Context, name string, i int, configPath string, extra []string) error {
	l := c.l
	ns, ip := agentNS(i), agentIP(i)
	mirror, err := l.addr(ip, 5050)
	if err != nil {
		return err
	}
	peer, err := l.addr(ip, 7002)
	if err != nil {
		return err
	}
	a := &agent{url: "http://" + mirror, clientURL: "http://" + mirror}
	listen := mirror
	if l.net != nil {
		// The mirror's client (dockerd) is on the agent's host, on
		// loopback; the bench reaches /metrics and /readyz over the
		// bridge.
		listen = "0.0.0.0:5050"
		a.clientURL = "http://127.0.0.1:5050"
	}
	args := []string{
		"--listen", listen,
		"--peer-listen", peer,
		"--origin", c.originURL,
		"--origin-seeders", c.seeder,
		"--tracker", c.tracker,
		"--cache-dir", filepath.Join(l.dir, name+"-agents", "cache-"+strconv.Itoa(i)),
		"--peer-id", fmt.Sprintf("agent-%d-%s", i, strings.ReplaceAll(ip, ".", "-")),
		"--config", configPath,
		"--log-format", "json",
	}
	a.proc, err = l.start(ctx, ns, fmt.Sprintf("%s-agent-%d", name, i), l.bins.agent, append(args, extra...), a.url+"/readyz")
	if err != nil {
		return err
	}
	c.agents[i] = a
	return nil
}

// stopAgents stops the agents (in parallel) ahead of the rest.
func (c *cluster) stopAgents() {
	var procs []*testenv.Process
	for _, a := range c.agents {
		if a != nil {
			procs = append(procs, a.proc)
		}
	}
	stopAll(procs)
}

// originEgress is what the origin sent: piece bytes from its seeder and
// blob bodies from its registry API, and the seeder's counts of pieces
// sent whole, sent again, requests declined by reason and superseeding
// grants freed by reason (freedReasons).
type originEgress struct {
	seeder, http  float64
	pieces, again float64
	busy, atPeers float64
	freed         [len(freedReasons)]float64
}

// freedReasons are the reasons of shoal_origin_seeder_superseed_grants_freed_total.
var freedReasons = [...]string{"window_over", "send_incomplete", "connection_broken", "streams_closed"}

func (e originEgress) total() float64 { return e.seeder + e.http }

// minus is what happened between before and e.
func (e originEgress) minus(before originEgress) originEgress {
	d := originEgress{
		seeder: e.seeder - before.seeder, http: e.http - before.http,
		pieces: e.pieces - before.pieces, again: e.again - before.again,
		busy: e.busy - before.busy, atPeers: e.atPeers - before.atPeers,
	}
	for k := range d.freed {
		d.freed[k] = e.freed[k] - before.freed[k]
	}
	return d
}

// originEgress scrapes the origin, retrying: right after 50 hosts pulled
// through its shaped link, on two overloaded cores, one scrape can time
// out.
func (c *cluster) originEgress(ctx context.Context) (originEgress, error) {
	var m testenv.Metrics
	var err error
	for range 4 {
		if m, err = testenv.ScrapeMetrics(ctx, c.originMetrics); err == nil || ctx.Err() != nil {
			break
		}
		slog.Warn("scraping the origin, retrying", "err", err)
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		return originEgress{}, err
	}
	e := originEgress{
		seeder:  m.Sum("shoal_origin_seeder_egress_bytes_total"),
		http:    m.Sum("shoal_origin_http_response_bytes_total", "handler", "blob"),
		pieces:  m.Sum("shoal_origin_seeder_pieces_served_total"),
		again:   m.Sum("shoal_origin_seeder_pieces_sent_again_total"),
		busy:    m.Sum("shoal_origin_seeder_rejects_total", "reason", "busy"),
		atPeers: m.Sum("shoal_origin_seeder_rejects_total", "reason", "at_peers"),
	}
	for k, r := range freedReasons {
		e.freed[k] = m.Sum("shoal_origin_seeder_superseed_grants_freed_total", "reason", r)
	}
	return e, nil
}

// agentSum sums a metric over the agents.
func (c *cluster) agentSum(ctx context.Context, name string, labels ...string) float64 {
	var sum float64
	for _, a := range c.agents {
		if a == nil || a.proc.Exited() {
			continue
		}
		m, err := testenv.ScrapeMetrics(ctx, a.url+"/metrics")
		if err != nil {
			continue
		}
		sum += m.Sum(name, labels...)
	}
	return sum
}
