package auth

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
)

// The certificate profile of a Shoal cluster.
//
// Every origin node, agent and tracker holds a certificate signed by the
// cluster CA (a CA used for nothing else). Who the holder is comes from one
// URI subject alternative name:
//
//	shoal://<role>/<peer-id>
//
// where role is origin, agent or tracker and peer-id is the id the holder
// announces to trackers and sends in peer handshakes. The common name
// repeats the peer id for people reading logs and `openssl x509 -text`; it
// decides nothing. IP and DNS subject alternative names are the addresses
// the holder may be reached at (TLS server names, and the hosts it may
// announce). Every role's certificate is valid for TLS server and client
// use: agents and origins both serve and call peers.
//
// A certificate without exactly one shoal:// URI is no cluster identity,
// whatever CA signed it: components that need one refuse it.

// Role is what a cluster certificate lets its holder be.
type Role string

// The roles of a cluster certificate.
const (
	// RoleOrigin may announce itself to trackers as an origin seeder
	// (is_origin).
	RoleOrigin Role = "origin"
	// RoleAgent is a peer-agent: it announces and exchanges pieces as an
	// ordinary peer.
	RoleAgent Role = "agent"
	// RoleTracker serves announces; it does not announce.
	RoleTracker Role = "tracker"
)

// PeerURIScheme is the scheme of the URI SAN that carries a peer identity.
const PeerURIScheme = "shoal"

// MaxPeerIDLen is the longest peer id, the tracker's limit on announces.
const MaxPeerIDLen = 128

// ErrNoPeerIdentity is wrapped by PeerIdentity's error for a certificate
// that carries no shoal:// URI: not a certificate of the cluster profile.
var ErrNoPeerIdentity = errors.New("certificate carries no shoal://<role>/<peer-id> URI")

// Identity is who a cluster certificate says its holder is.
type Identity struct {
	Role Role
	// ID is the peer id.
	ID string
	// IPs and DNSNames are the certificate's IP and DNS subject alternative
	// names: the addresses its holder may announce.
	IPs      []netip.Addr
	DNSNames []string
}

// URI returns the identity's shoal://<role>/<peer-id> URI.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: PeerURIScheme, Host: string(id.Role), Path: "/" + id.ID}
}

// String is the URI, for logs and error messages.
func (id Identity) String() string { return id.URI().String() }

// HasIP reports whether ip is one of the certificate's IP addresses.
func (id Identity) HasIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, a := range id.IPs {
		if a == ip {
			return true
		}
	}
	return false
}

// HasDNSName reports whether name is one of the certificate's DNS names
// (compared without case, as DNS does; wildcards are not expanded: a peer
// announces its own name).
func (id Identity) HasDNSName(name string) bool {
	name = strings.TrimSuffix(name, ".")
	for _, n := range id.DNSNames {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleOrigin, RoleAgent, RoleTracker:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q: want origin, agent or tracker", s)
}

// ValidatePeerID checks that id can be a peer id: 1 to MaxPeerIDLen bytes
// of URI unreserved characters (letters, digits, '-', '.', '_', '~'), so
// that it is one path segment of the URI as written, and neither "." nor
// "..". Host names and "node-1" qualify.
func ValidatePeerID(id string) error {
	if id == "" || len(id) > MaxPeerIDLen {
		return fmt.Errorf("peer id must be 1 to %d bytes, got %d", MaxPeerIDLen, len(id))
	}
	if id == "." || id == ".." {
		return fmt.Errorf("peer id %q is a dot segment", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			continue
		}
		return fmt.Errorf("peer id %q: character %q not allowed (letters, digits, '-', '.', '_', '~')", id, c)
	}
	return nil
}

// PeerIdentity reads the identity of a certificate in the cluster profile.
// It does not verify the certificate: pass only a certificate from a
// verified chain (as PeerFromContext and PeerFromTLS do).
func PeerIdentity(cert *x509.Certificate) (Identity, error) {
	var found *url.URL
	for _, u := range cert.URIs {
		if u.Scheme != PeerURIScheme {
			continue
		}
		if found != nil {
			return Identity{}, fmt.Errorf("certificate %q carries two peer identities (%s and %s)", cert.Subject.CommonName, found, u)
		}
		found = u
	}
	if found == nil {
		return Identity{}, fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, ErrNoPeerIdentity)
	}
	// Only the exact form: no user, port, query or fragment, one path
	// segment. Anything looser would let two spellings name one peer.
	if found.User != nil || found.Port() != "" || found.RawQuery != "" || found.Fragment != "" || found.Opaque != "" ||
		found.RawPath != "" || !strings.HasPrefix(found.Path, "/") {
		return Identity{}, fmt.Errorf("certificate %q: peer URI %s is not shoal://<role>/<peer-id>", cert.Subject.CommonName, found)
	}
	role, err := ParseRole(found.Host)
	if err != nil {
		return Identity{}, fmt.Errorf("certificate %q: peer URI %s: %w", cert.Subject.CommonName, found, err)
	}
	id := found.Path[1:]
	if err := ValidatePeerID(id); err != nil {
		return Identity{}, fmt.Errorf("certificate %q: peer URI %s: %w", cert.Subject.CommonName, found, err)
	}
	out := Identity{Role: role, ID: id, DNSNames: cert.DNSNames}
	for _, ip := range cert.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out.IPs = append(out.IPs, a.Unmap())
		}
	}
	return out, nil
}

// PeerFromTLS returns the identity of the verified client (or server)
// certificate of a TLS connection. Only a verified chain counts: a
// certificate the handshake did not verify against the cluster CA, or none,
// is an error.
func PeerFromTLS(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, errors.New("no verified cluster certificate")
	}
	return PeerIdentity(cs.VerifiedChains[0][0])
}

// AuthenticatePeer is PeerFromContext with the reason when there is no
// identity, for errors a person can act on.
func AuthenticatePeer(ctx context.Context) (Identity, error) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return Identity{}, errors.New("no gRPC peer in context")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Identity{}, errors.New("connection is not TLS")
	}
	return PeerFromTLS(&info.State)
}

// PeerFromContext returns the identity of the peer of a gRPC call (server
// side), from the certificate its TLS connection verified. It reports false
// for plaintext connections, unverified certificates and certificates
// outside the cluster profile.
func PeerFromContext(ctx context.Context) (Identity, bool) {
	id, err := AuthenticatePeer(ctx)
	return id, err == nil
}

// OwnIdentity returns the identity in a component's own certificate, so
// that an agent or origin node takes its peer id from it: with mTLS,
// trackers accept no other.
func OwnIdentity(c *tls.Certificate) (Identity, error) {
	leaf := c.Leaf
	if leaf == nil {
		if len(c.Certificate) == 0 {
			return Identity{}, errors.New("no certificate")
		}
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return Identity{}, fmt.Errorf("parsing own certificate: %w", err)
		}
	}
	return PeerIdentity(leaf)
}

// PeerTemplate returns the template of a certificate in the cluster profile
// for id, valid from notBefore to notAfter, with a random 128-bit serial
// number. Sign it with the cluster CA (x509.CreateCertificate).
func PeerTemplate(id Identity, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	if _, err := ParseRole(string(id.Role)); err != nil {
		return nil, err
	}
	if err := ValidatePeerID(id.ID); err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id.ID},
		URIs:         []*url.URL{id.URI()},
		DNSNames:     id.DNSNames,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		// DigitalSignature is all an ECDSA or Ed25519 TLS key does.
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, ip := range id.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.Unmap().AsSlice()))
	}
	return tmpl, nil
}
