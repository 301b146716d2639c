package peerwire

import (
	"net"
	"strings"
)

// SeedersHeader is the HTTP response header on the origin's `/v2/` answer
// (whatever its status: a 401 to an anonymous request carries it too) that
// lists the origin cluster's seeder gRPC addresses, comma-separated. Agents
// started without originSeeders learn their seeders from it.
const SeedersHeader = "Shoal-Seeders"

// FormatSeeders is the SeedersHeader value for addrs.
func FormatSeeders(addrs []string) string { return strings.Join(addrs, ",") }

// ParseSeeders returns the host:port addresses in a SeedersHeader value,
// in order, without duplicates. Entries that are not host:port, or whose
// host is empty or unspecified (no host could dial them), are skipped and
// returned in bad.
func ParseSeeders(v string) (addrs, bad []string) {
	seen := map[string]bool{}
	for _, a := range strings.Split(v, ",") {
		a = strings.TrimSpace(a)
		if a == "" || seen[a] {
			continue
		}
		seen[a] = true
		host, port, err := net.SplitHostPort(a)
		ip := net.ParseIP(host)
		if err != nil || host == "" || port == "" || (ip != nil && ip.IsUnspecified()) {
			bad = append(bad, a)
			continue
		}
		addrs = append(addrs, a)
	}
	return addrs, bad
}
