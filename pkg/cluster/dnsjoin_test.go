package cluster

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestResolveJoinExpandsDNSEntries: a dns: entry stands for every address
// its name resolves to, other entries stay as they are, and a name that
// does not resolve is reported without losing the others.
func TestResolveJoinExpandsDNSEntries(t *testing.T) {
	lookup := func(_ context.Context, host string) ([]net.IPAddr, error) {
		switch host {
		case "shoal-origin-headless.ns.svc":
			return []net.IPAddr{{IP: net.ParseIP("10.0.0.5")}, {IP: net.ParseIP("10.0.0.6")}, {IP: net.ParseIP("fd00::7")}}, nil
		}
		return nil, errors.New("no such host")
	}
	got, err := resolveJoin(context.Background(), []string{"origin-1:7946", "dns:shoal-origin-headless.ns.svc:7946", "dns:gone.ns.svc:7946"}, lookup)
	want := []string{"origin-1:7946", "10.0.0.5:7946", "10.0.0.6:7946", "[fd00::7]:7946"}
	if !slices.Equal(got, want) {
		t.Errorf("resolveJoin = %v, want %v", got, want)
	}
	if err == nil {
		t.Error("a dns: name that does not resolve was not reported")
	}
	if err := (Config{Join: []string{"dns:no-port"}}).Validate(); err == nil {
		t.Error("Validate accepted a dns: entry without a port")
	}
}

// TestDNSJoinFindsNodesThatStartLater: a node joining by a dns: name joins
// the addresses the name resolves to that are not members yet at every
// rejoin interval, so a node that came up alone after it (as origin pods
// of a StatefulSet behind a headless Service do) is merged in without a
// restart, though the joining node was not alone.
func TestDNSJoinFindsNodesThatStartLater(t *testing.T) {
	a := start(t, testConfig("node-a", "127.0.0.1:7101"))
	// node-b's gossip port is chosen now and the node started later.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	_, aPort, _ := net.SplitHostPort(a.LocalAddr())
	records := func(_ context.Context, host string) ([]net.IPAddr, error) {
		if host != "origins.test" {
			return nil, errors.New("no such host")
		}
		return []net.IPAddr{{IP: net.ParseIP("127.0.0.1")}}, nil
	}
	ccfg := testConfig("node-c", "127.0.0.1:7103")
	ccfg.Join = []string{"dns:origins.test:" + aPort, "dns:origins.test:" + strconv.Itoa(bPort)}
	c, err := startWithLookup(ccfg, nil, records)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(time.Second) })
	waitMembers(t, c, 2)

	bcfg := testConfig("node-b", "127.0.0.1:7102")
	bcfg.BindPort = bPort
	b := start(t, bcfg)
	waitMembers(t, b, 3)
	waitMembers(t, a, 3)
}
