package main

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Names of everything the netns mode creates. A crashed run's leftovers
// are found by these prefixes and nothing else is ever touched.
const (
	nsPrefix   = "shoalbench-"
	bridgeName = "shoalbench0"
	// linkPrefix names the host ends of the veth pairs (interface names
	// are at most 15 bytes, so "shoalbench-" would not leave room).
	linkPrefix = "shb"
	// subnet is private and used by these namespaces only.
	subnetPrefix = "10.213."
	bridgeAddr   = subnetPrefix + "0.1"
)

// netns is the network of a -netns run: one bridge in the root namespace
// and one namespace per host, each behind its own veth pair shaped to the
// bench's rate in both directions.
type netns struct {
	// rate is tc's rate, e.g. "100mbit".
	rate string
	// names of the namespaces created, for cleanup.
	created []string
	// hosts are the namespaces with their addresses, for the static
	// neighbour entries.
	hosts []nsHost
}

type nsHost struct{ ns, ip, mac string }

// hostMAC is a fixed, locally administered MAC address for ip (10.213.x.y).
func hostMAC(ip string) string {
	var a, b, c, d int
	_, _ = fmt.Sscanf(ip, "%d.%d.%d.%d", &a, &b, &c, &d)
	return fmt.Sprintf("02:5b:%02x:%02x:%02x:%02x", a, b, c, d)
}

// originNS is the namespace of the origin (registry API and seeder) and
// the tracker: in production the origin's NIC is the bottleneck, so it
// gets a shaped link like every agent.
const originNS = nsPrefix + "origin"

// originIP is the origin namespace's address.
const originIP = subnetPrefix + "0.2"

func agentNS(i int) string { return nsPrefix + strconv.Itoa(i) }

// agentIP spreads agents over 10.213.1.0 - 10.213.200.255, 250 per /24.
func agentIP(i int) string {
	return fmt.Sprintf("%s%d.%d", subnetPrefix, 1+i/250, 2+i%250)
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// removeLeftovers deletes what a previous run that crashed left behind:
// processes inside our namespaces (by PID), the namespaces, host links with
// our prefix and the bridge.
func removeLeftovers(ctx context.Context) error {
	list, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return fmt.Errorf("listing network namespaces: %w", err)
	}
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		slog.Info("removing a previous run's namespace", "netns", f[0])
		killNSProcesses(ctx, f[0])
		if err := run(ctx, "ip", "netns", "del", f[0]); err != nil {
			return fmt.Errorf("removing leftover namespace: %w", err)
		}
	}
	links, err := output(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	for _, line := range strings.Split(links, "\n") {
		// "12: shb3@if11: <BROADCAST,..." or "5: shoalbench0: <..."
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if name == bridgeName || (strings.HasPrefix(name, linkPrefix) && isDigits(name[len(linkPrefix):])) || name == linkPrefix+"o" {
			slog.Info("removing a previous run's link", "link", name)
			if err := run(ctx, "ip", "link", "del", name); err != nil {
				return fmt.Errorf("removing leftover link: %w", err)
			}
		}
	}
	return nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// killNSProcesses SIGKILLs the processes inside one of our namespaces, by
// PID as `ip netns pids` lists them.
func killNSProcesses(ctx context.Context, ns string) {
	out, err := output(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// setup creates the bridge and the origin's namespace. Agents are added by
// addHost.
func (n *netns) setup(ctx context.Context) error {
	if err := run(ctx, "ip", "link", "add", bridgeName, "type", "bridge"); err != nil {
		return fmt.Errorf("creating the bridge: %w", err)
	}
	if err := run(ctx, "ip", "addr", "add", bridgeAddr+"/16", "dev", bridgeName); err != nil {
		return fmt.Errorf("addressing the bridge: %w", err)
	}
	if err := run(ctx, "ip", "link", "set", bridgeName, "up"); err != nil {
		return fmt.Errorf("bringing the bridge up: %w", err)
	}
	return n.addHost(ctx, originNS, linkPrefix+"o", originIP)
}

// addHost creates namespace ns with loopback up and a veth pair: hostLink
// in the bridge, eth0 inside with ip/16.
func (n *netns) addHost(ctx context.Context, ns, hostLink, ip string) error {
	if err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("creating namespace: %w", err)
	}
	n.created = append(n.created, ns)
	mac := hostMAC(ip)
	n.hosts = append(n.hosts, nsHost{ns: ns, ip: ip, mac: mac})
	steps := [][]string{
		{"ip", "link", "add", hostLink, "type", "veth", "peer", "name", "eth0", "address", mac, "netns", ns},
		{"ip", "link", "set", hostLink, "master", bridgeName},
		{"ip", "link", "set", hostLink, "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "addr", "add", ip + "/16", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("setting up %s: %w", ns, err)
		}
	}
	return nil
}

// staticNeighbours gives every namespace a permanent neighbour entry for
// every other host, so that no ARP is needed during the run. On the
// bridge, an ARP request is a broadcast that has to get through the
// shaped, tail-dropping queue of the host it asks for; once pieces
// saturate those queues, requests and replies are lost, the kernel drops
// the SYNs waiting on resolution, and an agent that had not yet resolved
// its peers stayed cut off from every agent for 30-60 s (seen with ss:
// 16 connections in SYN-SENT, none in SYN-RECV anywhere) while it still
// reached the origin it had resolved before the pulls. Hosts in a real
// network resolve each other before bulk traffic or across routers; the
// bench measures the agents, not ARP in a 50 ms queue.
func (n *netns) staticNeighbours(ctx context.Context) error {
	var batch strings.Builder
	for _, self := range n.hosts {
		batch.Reset()
		for _, h := range n.hosts {
			if h.ns != self.ns {
				fmt.Fprintf(&batch, "neigh replace %s lladdr %s dev eth0 nud permanent\n", h.ip, h.mac)
			}
		}
		cmd := exec.CommandContext(ctx, "ip", "-n", self.ns, "-batch", "-")
		cmd.Stdin = strings.NewReader(batch.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("static neighbour entries in %s: %w: %s", self.ns, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// shape limits both directions of a host's link to the bench's rate: egress
// of eth0 inside the namespace (what the host sends) and egress of the host
// end of the veth (what it receives).
func (n *netns) shape(ctx context.Context, ns, hostLink string) error {
	// burst must hold a GSO super-packet (veths pass up to 64 KiB at once);
	// latency bounds the queue so a saturated link drops instead of
	// buffering seconds of data.
	tbf := []string{"root", "tbf", "rate", n.rate, "burst", "256k", "latency", "50ms"}
	if err := run(ctx, "tc", append([]string{"qdisc", "replace", "dev", hostLink}, tbf...)...); err != nil {
		return fmt.Errorf("shaping %s: %w", hostLink, err)
	}
	if err := run(ctx, "ip", append([]string{"netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0"}, tbf...)...); err != nil {
		return fmt.Errorf("shaping eth0 in %s: %w", ns, err)
	}
	return nil
}

// teardown kills whatever still runs inside our namespaces and deletes
// them and the bridge (deleting a namespace deletes its veth pair). It uses
// its own context: it runs after Ctrl-C cancelled the bench's.
func (n *netns) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, ns := range n.created {
		killNSProcesses(ctx, ns)
	}
	for _, ns := range n.created {
		if err := run(ctx, "ip", "netns", "del", ns); err != nil {
			slog.Warn("cleanup", "err", err)
		}
	}
	if err := run(ctx, "ip", "link", "del", bridgeName); err != nil {
		slog.Warn("cleanup", "err", err)
	}
}
