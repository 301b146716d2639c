package agent

import (
	"context"
	"fmt"
	"net"
)

// routeFunc returns the local address the kernel would send packets to
// addr (host:port) from. sourceIP is the real one; tests pass their own.
type routeFunc func(ctx context.Context, addr string) (net.IP, error)

// sourceIP learns the local address of the route to addr by "connecting" a
// UDP socket to it: connect(2) on a datagram socket picks the route and
// the source address and sends nothing, so it works whatever the far end
// runs and whether or not a firewall would drop the packet.
func sourceIP(ctx context.Context, addr string) (net.IP, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("finding the route to %s: %w", addr, err)
	}
	defer c.Close()
	ua, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok || ua.IP == nil || ua.IP.IsUnspecified() {
		return nil, fmt.Errorf("finding the route to %s: no local address", addr)
	}
	return ua.IP, nil
}

// advertised is the outcome of choosing the peer address to announce.
type advertised struct {
	// Addr is the address announced to the trackers. A host left
	// unspecified (":7002") is filled in by the tracker with the address
	// the announce came from.
	Addr string
	// How says where Addr came from, for the start-up log.
	How string
	// Problem is set when other hosts cannot reach Addr: a loopback address
	// announced to a tracker on another host.
	Problem *problem
}

// chooseAdvertise picks the peer address announced to trackers:
//   - configured (--advertise-addr, advertiseAddr) when given;
//   - else the bound peer address when its host is a specific address;
//   - else (the listener on every interface, the default) that port on the
//     source address of the route to the first tracker that has one: the
//     address the tracker and the hosts near it reach this one at;
//   - else the port alone, for the tracker to fill in.
//
// Whatever the source, a loopback address announced to a tracker that is
// not on loopback is a problem: no other host can dial it.
func chooseAdvertise(ctx context.Context, configured, bound string, trackers []string, route routeFunc) advertised {
	a := chooseAdvertiseAddr(ctx, configured, bound, trackers, route)
	if host, _, err := net.SplitHostPort(a.Addr); err == nil && isLoopbackHost(host) {
		for _, t := range trackers {
			if th, _, err := net.SplitHostPort(t); err == nil && !isLoopbackHost(th) {
				a.Problem = &problem{
					Check:  checkAdvertise,
					Reason: fmt.Sprintf("the peer address announced to the trackers, %s (%s), is a loopback address: agents on other hosts (tracker %s) cannot fetch pieces from this one", a.Addr, a.How, t),
					Fix:    "drop --peer-listen (it binds every interface by default) or set --advertise-addr to an address the other hosts reach",
				}
				break
			}
		}
	}
	return a
}

func chooseAdvertiseAddr(ctx context.Context, configured, bound string, trackers []string, route routeFunc) advertised {
	if configured != "" {
		return advertised{Addr: configured, How: "advertiseAddr"}
	}
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return advertised{Addr: bound, How: "peerListen"}
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return advertised{Addr: bound, How: "peerListen"}
	}
	for _, t := range trackers {
		ip, err := route(ctx, t)
		if err != nil {
			continue
		}
		return advertised{Addr: net.JoinHostPort(ip.String(), port), How: "the route to tracker " + t}
	}
	// No tracker, or none resolvable yet: announce the port alone and let
	// the tracker put in the address the announce comes from.
	return advertised{Addr: net.JoinHostPort("", port), How: "filled in by the tracker"}
}

// isLoopbackHost reports whether host names this machine only: a loopback
// IP or "localhost".
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
