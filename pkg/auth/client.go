package auth

import (
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/distribution/reference"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// clientAddr is the address r comes from: the TCP peer, or, when the peer
// is a trusted proxy, the right-most X-Forwarded-For hop that is not one of
// the trusted proxies (hops to its left are whatever the client wrote).
func (a *Authorizer) clientAddr(r *http.Request) netip.Addr {
	peer := peerAddr(r)
	if !a.trusted(peer) {
		return peer
	}
	hops := forwardedHops(r.Header.Values("X-Forwarded-For"))
	addr := peer
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(hops[i])
		if err != nil {
			// A hop that is no address was written by someone untrusted:
			// the last trusted hop is as far as the chain can be believed.
			return addr
		}
		addr = hop.Unmap()
		if !a.trusted(addr) {
			return addr
		}
	}
	return addr
}

// peerAddr is r's TCP peer address.
func peerAddr(r *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(r.RemoteAddr); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}

// forwardedHops splits X-Forwarded-For values (one header or several) into
// hops, left to right.
func forwardedHops(values []string) []string {
	var hops []string
	for _, v := range values {
		for _, h := range strings.Split(v, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	return hops
}

func (a *Authorizer) trusted(addr netip.Addr) bool {
	return addr.IsValid() && slices.ContainsFunc(a.proxies, func(p netip.Prefix) bool { return p.Contains(addr) })
}

// scheme is how the client reached r: https over TLS, or what a trusted
// proxy says in X-Forwarded-Proto.
func (a *Authorizer) scheme(r *http.Request) string {
	if a.trusted(peerAddr(r)) {
		switch p := strings.ToLower(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto"))); p {
		case "http", "https":
			return p
		}
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// certNames are the common name and DNS names of r's verified client
// certificate. Only a chain the TLS stack verified against the client CA
// counts; a certificate it merely received proves nothing.
func certNames(r *http.Request) []string {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	leaf := r.TLS.VerifiedChains[0][0]
	var names []string
	if leaf.Subject.CommonName != "" {
		names = append(names, leaf.Subject.CommonName)
	}
	for _, n := range leaf.DNSNames {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// nameRegexp is the distribution reference grammar for a repository name.
var nameRegexp = regexp.MustCompile(`^` + reference.NameRegexp.String() + `$`)

// validName reports whether name is a repository name a registry accepts.
// Rules are matched against names as written, so anything else ("a/../b",
// "A/b", "a//b") is refused before any rule sees it.
func validName(name string) bool {
	if len(name) > 255 {
		return false
	}
	// Almost every name is path components only, which ociapi checks
	// without a regexp; the grammar's optional domain (uppercase, ports) is
	// left to the regexp.
	return ociapi.ValidName(name) || nameRegexp.MatchString(name)
}
