package cluster

import (
	"net"
	"net/http"

	"github.com/shoal-dev/shoal/internal/peerwire"
)

// AdvertiseSeeders wraps the origin's registry API so that its answers to
// `/v2/` carry the live members' seeder addresses (peerwire.SeedersHeader):
// agents started with only the origin's URL learn their seeders there.
// The header is set before the registry answers, so a 401 to an anonymous
// agent carries it too; the addresses are not secret (every seeder call
// needs a capability the origin signs), and the agent reaches `/v2/` over
// the same TLS, client certificate included, as every other origin request.
//
// A seeder address whose host is unspecified (no address to advertise was
// found) is this node's own only if the node could not tell: it gets the
// address the request came in on, which the agent just reached. Other
// members' are left out.
func (c *Cluster) AdvertiseSeeders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" || r.URL.Path == "/v2" {
			if list := seederAddrs(c.Members(), c.self.Name, localIP(r)); len(list) > 0 {
				w.Header().Set(peerwire.SeedersHeader, peerwire.FormatSeeders(list))
			}
		}
		next.ServeHTTP(w, r)
	})
}

// seederAddrs lists the members' seeder addresses in member order. A
// member without a seeder is skipped, and so is an address with an
// unspecified host unless it is self's and local fills it.
func seederAddrs(members []Member, self string, local net.IP) []string {
	var out []string
	for _, m := range members {
		host, port, err := net.SplitHostPort(m.Addr)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			if m.Name != self || local == nil {
				continue
			}
			m.Addr = net.JoinHostPort(local.String(), port)
		}
		out = append(out, m.Addr)
	}
	return out
}

// localIP is the address of this host that r came in on.
func localIP(r *http.Request) net.IP {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return nil
	}
	if ta, ok := a.(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		return ta.IP
	}
	return nil
}
