package agent

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

// TestSourceIPIsTheRouteToTheTracker: the UDP connect trick names the local
// address the kernel sends from: loopback for a tracker on this host, and
// each local interface's own address for a tracker at that address.
func TestSourceIPIsTheRouteToTheTracker(t *testing.T) {
	ip, err := sourceIP(context.Background(), "127.0.0.1:7001")
	if err != nil || !ip.IsLoopback() {
		t.Fatalf("route to 127.0.0.1:7001 from %v (%v), want a loopback address", ip, err)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.To4() == nil || n.IP.IsLoopback() || n.IP.IsLinkLocalUnicast() {
			continue
		}
		got, err := sourceIP(context.Background(), net.JoinHostPort(n.IP.String(), "7001"))
		if err != nil || !got.Equal(n.IP) {
			t.Errorf("route to this host's %s from %v (%v), want %s", n.IP, got, err, n.IP)
		}
	}
	if _, err := sourceIP(context.Background(), "no-such-host.invalid:7001"); err == nil {
		t.Error("a tracker name that does not resolve gave a source address")
	}
}

func TestChooseAdvertise(t *testing.T) {
	routes := map[string]string{"tracker-1:7001": "10.0.0.7", "127.0.0.1:7001": "127.0.0.1"}
	route := func(_ context.Context, addr string) (net.IP, error) {
		if ip, ok := routes[addr]; ok {
			return net.ParseIP(ip), nil
		}
		return nil, errors.New("no route")
	}
	for _, tc := range []struct {
		name       string
		configured string
		bound      string
		trackers   []string
		want       string
		problem    bool
	}{
		{"configured wins", "agent-3.example.com:7002", "[::]:7002", []string{"tracker-1:7001"}, "agent-3.example.com:7002", false},
		{"specific bound address", "", "10.0.0.9:7002", []string{"tracker-1:7001"}, "10.0.0.9:7002", false},
		{"every interface: the route to the tracker", "", "[::]:7002", []string{"tracker-1:7001"}, "10.0.0.7:7002", false},
		{"0.0.0.0 likewise", "", "0.0.0.0:7002", []string{"tracker-1:7001"}, "10.0.0.7:7002", false},
		{"first tracker with a route", "", "[::]:7002", []string{"gone:7001", "tracker-1:7001"}, "10.0.0.7:7002", false},
		{"no route: the tracker fills in", "", "[::]:7002", []string{"gone:7001"}, ":7002", false},
		{"no tracker", "", "[::]:7002", nil, ":7002", false},
		{"all on one host", "", "[::]:7002", []string{"127.0.0.1:7001"}, "127.0.0.1:7002", false},
		{"loopback bound, local tracker", "", "127.0.0.1:7002", []string{"127.0.0.1:7001"}, "127.0.0.1:7002", false},
		{"loopback bound, remote tracker", "", "127.0.0.1:7002", []string{"tracker-1:7001"}, "127.0.0.1:7002", true},
		{"loopback configured, remote tracker", "localhost:7002", "[::]:7002", []string{"127.0.0.1:7001", "10.1.1.1:7001"}, "localhost:7002", true},
	} {
		got := chooseAdvertise(context.Background(), tc.configured, tc.bound, tc.trackers, route)
		if got.Addr != tc.want || (got.Problem != nil) != tc.problem {
			t.Errorf("%s: advertise %q (from %s), problem %v; want %q, problem %v", tc.name, got.Addr, got.How, got.Problem, tc.want, tc.problem)
			continue
		}
		if got.Problem != nil && (got.Problem.Check != checkAdvertise || !strings.Contains(got.Problem.Reason, got.Addr) || got.Problem.Fix == "") {
			t.Errorf("%s: problem %+v does not name the advertise check, the address and a fix", tc.name, *got.Problem)
		}
	}
}
