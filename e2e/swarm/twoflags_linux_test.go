package swarm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// The two-flag test's network: a bridge in the root namespace and one
// namespace per host behind a veth pair, on a private /16 of its own. A
// crashed run's leftovers are found by these names and nothing else is
// touched.
const (
	tfPrefix   = "shoal2f-"
	tfBridge   = "shoal2f0"
	tfLink     = "s2f" // host ends of the veth pairs: s2f0, s2f1, ...
	tfSubnet   = "10.214."
	tfBridgeIP = tfSubnet + "0.1"
	tfOriginIP = tfSubnet + "0.2"
	tfAgents   = 3
)

// TestAgentsWithOnlyOriginAndTrackerShareOverARealNetwork: an origin
// started with only a tracker (its seeder then on by default) and agents
// started with only --origin and --tracker, each on a host of its own
// (network namespaces on a bridge, as hosts on a LAN), find everything
// else themselves: each agent's peer listener binds every interface and
// announces its host's address on the route to the tracker, learns the
// origin's seeder from the origin, says in /readyz that P2P works, and
// the three pulling one layer at once get pieces from each other while
// the origin's seeder sends it about once. Besides the two flags the
// agents get a cache directory each (the hosts share one file system
// here) and JSON logs; the test reaches their mirrors, on their hosts'
// loopback, through a forwarder that dials inside each namespace.
func TestAgentsWithOnlyOriginAndTrackerShareOverARealNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.Unavailable(t, "ip (iproute2) is not installed: %v", err)
	}
	bins := buildBinaries(t, false)
	lan := setupTwoFlagNetwork(t)
	dir := t.TempDir()

	originHost := lan.add(t, "origin", tfOriginIP)
	agentHosts := make([]nsHost, tfAgents)
	for i := range agentHosts {
		agentHosts[i] = lan.add(t, fmt.Sprintf("agent-%d", i+1), fmt.Sprintf("%s1.%d", tfSubnet, 2+i))
	}

	trackerAddr := tfOriginIP + ":7001"
	tracker := originHost.start(t, "tracker", dir, "127.0.0.1:7081", bins.tracker, "--listen", "0.0.0.0:7001")
	defer stopProcess(t, tracker.Process)
	origin := originHost.start(t, "origin", dir, "127.0.0.1:5000", bins.origin,
		"--listen", "0.0.0.0:5000", "--storage", "file://"+filepath.Join(dir, "storage"),
		"--cache-dir", filepath.Join(dir, "seeder-cache"), "--tracker", trackerAddr)
	defer stopProcess(t, origin.Process)

	agents := make([]*testenv.Server, tfAgents)
	for i, h := range agentHosts {
		agents[i] = h.start(t, h.name, dir, "127.0.0.1:5050", bins.agent,
			"--origin", "http://"+tfOriginIP+":5000", "--tracker", trackerAddr,
			"--cache-dir", filepath.Join(dir, "cache-"+h.name), "--log-format", "json")
	}
	defer func() {
		for _, a := range agents {
			stopProcess(t, a.Process)
		}
	}()

	// Each agent found its way: ready with P2P, its host's address
	// announced, the origin's seeder learned.
	for i, a := range agents {
		r, err := readiness(t.Context(), a.URL())
		switch {
		case err != nil:
			t.Fatalf("%s: %v", a.Name, err)
		case !r.Ready || !r.P2P:
			t.Errorf("%s /readyz: ready %v, p2p %v, problems %+v; want P2P working", a.Name, r.Ready, r.P2P, r.Problems)
		}
		if want := agentHosts[i].ip + ":7002"; r.Advertise != want {
			t.Errorf("%s announces %s, want its host's address %s", a.Name, r.Advertise, want)
		}
		if want := []string{tfOriginIP + ":7003"}; !slices.Equal(r.Seeders, want) {
			t.Errorf("%s uses seeders %v, want %v, learned from the origin", a.Name, r.Seeders, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// An agent told to listen on loopback, with the tracker on another
	// host, still serves (the origin answers) but says why P2P cannot work.
	loHost := lan.add(t, "agent-lo", tfSubnet+"1.99")
	lo := loHost.start(t, loHost.name, dir, "127.0.0.1:5050", bins.agent,
		"--origin", "http://"+tfOriginIP+":5000", "--tracker", trackerAddr, "--peer-listen", "127.0.0.1:7002",
		"--cache-dir", filepath.Join(dir, "cache-"+loHost.name), "--log-format", "json")
	r, err := readiness(t.Context(), lo.URL())
	if err != nil {
		t.Fatalf("%s: %v", lo.Name, err)
	}
	if !r.Ready || r.P2P || len(r.Problems) != 1 || r.Problems[0].Check != "advertise" {
		t.Errorf("%s (peer listener on loopback) /readyz: ready %v, p2p %v, problems %+v; want ready without P2P, the advertise problem",
			lo.Name, r.Ready, r.P2P, r.Problems)
	}
	stopProcess(t, lo.Process)

	// The origin, seen from the root namespace at its LAN address, is the
	// cluster's registry and egress counter.
	c := &cluster{t: t, origins: []*testenv.SeedingOriginServer{{Server: &testenv.Server{Process: origin.Process, Addr: tfOriginIP + ":5000"}}}}
	c.agents = make([]*testenv.AgentServer, len(agents))
	for i, a := range agents {
		c.agents[i] = &testenv.AgentServer{Server: a}
	}
	l := c.pushLayer("library/twoflags", faultLayerSize)
	before := c.originEgress()
	c.checkPulls(c.startPulls(allIndexes(len(agents)), l).wait(), l)

	egress := c.originEgress().sub(before).total()
	peer := c.agentSum("shoal_agent_downloaded_bytes_total", "source", "peer")
	fromOrigin := c.agentSum("shoal_agent_downloaded_bytes_total", "source", "origin")
	t.Logf("origin egress %.1f MiB = %.2f x the layer; the agents received %.1f MiB from each other, %.1f MiB from the origin's seeder",
		egress/(1<<20), egress/float64(l.size), peer/(1<<20), fromOrigin/(1<<20))
	if peer == 0 {
		t.Errorf("the agents received no piece from each other: no P2P")
	}
	if egress < float64(l.size) || egress > 1.5*float64(l.size) {
		t.Errorf("the origin sent %.0f bytes for a %d-byte layer pulled by %d agents (%.2f x), want about one copy (1 to 1.5 x)",
			egress, l.size, len(agents), egress/float64(l.size))
	}
}

// agentReadiness is the agent's /readyz body (docs/agent.md).
type agentReadiness struct {
	Ready     bool     `json:"ready"`
	P2P       bool     `json:"p2p"`
	Seeders   []string `json:"seeders"`
	Advertise string   `json:"advertise"`
	Problems  []struct {
		Check, Reason, Fix string
	} `json:"problems"`
}

func readiness(ctx context.Context, base string) (agentReadiness, error) {
	var r agentReadiness
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return r, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return r, fmt.Errorf("GET /readyz: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("GET /readyz: %s, body not its JSON: %w", resp.Status, err)
	}
	return r, nil
}

func stopProcess(t *testing.T, p *testenv.Process) {
	if err := p.Stop(testenv.DefaultStopTimeout); err != nil {
		t.Errorf("stopping %s: %v\n%s", p.Name, err, p.LogTail(20))
	}
}

// lanNetwork is the test's bridge and the namespaces on it.
type lanNetwork struct{ links int }

// nsHost is one namespace: a host with its own address on the bridge.
type nsHost struct{ name, ns, ip string }

func setupTwoFlagNetwork(t *testing.T) *lanNetwork {
	t.Helper()
	removeTwoFlagLeftovers(t)
	ipCmd(t, "link", "add", tfBridge, "type", "bridge")
	t.Cleanup(func() { removeTwoFlagLeftovers(t) })
	ipCmd(t, "addr", "add", tfBridgeIP+"/16", "dev", tfBridge)
	ipCmd(t, "link", "set", tfBridge, "up")
	return &lanNetwork{}
}

// add creates namespace name with loopback up and a veth pair: one end
// in the bridge, eth0 inside with ip/16.
func (n *lanNetwork) add(t *testing.T, name, ip string) nsHost {
	t.Helper()
	h := nsHost{name: name, ns: tfPrefix + name, ip: ip}
	link := fmt.Sprintf("%s%d", tfLink, n.links)
	n.links++
	ipCmd(t, "netns", "add", h.ns)
	for _, args := range [][]string{
		{"link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
		{"link", "set", link, "master", tfBridge},
		{"link", "set", link, "up"},
		{"-n", h.ns, "link", "set", "lo", "up"},
		{"-n", h.ns, "addr", "add", ip + "/16", "dev", "eth0"},
		{"-n", h.ns, "link", "set", "eth0", "up"},
	} {
		ipCmd(t, args...)
	}
	return h
}

// start runs bin with args inside the host's namespace (`ip netns exec`
// execs the binary, so the process is the server itself) and waits until
// GET /readyz at local, an address on the host's loopback, answers 200.
// The Server's Addr is a forwarder in the test's namespace to local.
func (h nsHost) start(t *testing.T, name, dir, local, bin string, args ...string) *testenv.Server {
	t.Helper()
	addr := forwardInto(t, h.ns, local)
	p, err := testenv.Start(t.Context(), testenv.Options{
		Name:    name,
		Path:    "ip",
		Args:    append([]string{"netns", "exec", h.ns, bin}, args...),
		LogPath: filepath.Join(dir, name+".log"),
		Ready:   testenv.HTTPReady("http://" + addr + "/readyz"),
	})
	if err != nil {
		t.Fatalf("starting %s in %s: %v", name, h.ns, err)
	}
	return &testenv.Server{Process: p, Addr: addr}
}

// forwardInto listens on a loopback port of the test's namespace and
// forwards each connection to target inside namespace ns.
func forwardInto(t *testing.T, ns, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := dialInNamespace(ns, target)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

// dialInNamespace connects to addr from inside namespace ns: the socket
// is created on an OS thread moved into ns (setns(2)), and a socket stays
// in the namespace it was created in whichever thread uses it later.
func dialInNamespace(ns, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Unlocked only once back in the test's namespace; otherwise the
		// thread ends with the goroutine, as a locked thread does.
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer self.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := setns(target); err != nil {
			ch <- result{err: fmt.Errorf("entering %s: %w", ns, err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if setns(self) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func setns(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// removeTwoFlagLeftovers kills what runs in the test's namespaces (by PID,
// as `ip netns pids` lists them), deletes them (and so their veth pairs)
// and the bridge.
func removeTwoFlagLeftovers(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Errorf("listing network namespaces: %v", err)
		return
	}
	var wg sync.WaitGroup
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], tfPrefix) {
			continue
		}
		ns := f[0]
		wg.Go(func() {
			if pids, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
				for _, p := range strings.Fields(string(pids)) {
					var pid int
					if _, err := fmt.Sscan(p, &pid); err == nil && pid > 1 {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("removing namespace %s: %v: %s", ns, err, out)
			}
		})
	}
	wg.Wait()
	if exec.Command("ip", "link", "show", tfBridge).Run() == nil {
		if out, err := exec.Command("ip", "link", "del", tfBridge).CombinedOutput(); err != nil {
			t.Errorf("removing bridge %s: %v: %s", tfBridge, err, out)
		}
	}
}
