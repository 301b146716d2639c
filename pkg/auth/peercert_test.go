package auth_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// signed returns the certificate that ca makes of tmpl, parsed.
func signed(t *testing.T, ca *testpki.CA, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, ca.Cert.PublicKey, ca.Key)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parsing: %v", err)
	}
	return cert
}

func TestPeerTemplateRoundTrips(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	want := auth.Identity{
		Role:     auth.RoleOrigin,
		ID:       "origin-1.dc2",
		IPs:      []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")},
		DNSNames: []string{"origin-1.example.com"},
	}
	tmpl, err := auth.PeerTemplate(want, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert := signed(t, ca, tmpl)
	if got := cert.URIs[0].String(); got != "shoal://origin/origin-1.dc2" {
		t.Errorf("URI SAN = %s, want shoal://origin/origin-1.dc2", got)
	}
	if cert.Subject.CommonName != want.ID {
		t.Errorf("common name = %q, want the peer id %q", cert.Subject.CommonName, want.ID)
	}
	got, err := auth.PeerIdentity(cert)
	if err != nil {
		t.Fatalf("PeerIdentity: %v", err)
	}
	if got.Role != want.Role || got.ID != want.ID || !slices.Equal(got.IPs, want.IPs) || !slices.Equal(got.DNSNames, want.DNSNames) {
		t.Fatalf("PeerIdentity = %+v, want %+v", got, want)
	}
	if !got.HasIP(netip.MustParseAddr("::ffff:10.0.0.5")) || got.HasIP(netip.MustParseAddr("10.0.0.6")) {
		t.Error("HasIP does not match exactly the certificate's addresses (IPv4-mapped form included)")
	}
	if !got.HasDNSName("ORIGIN-1.example.com.") || got.HasDNSName("origin-2.example.com") {
		t.Error("HasDNSName does not match exactly the certificate's names (case and trailing dot aside)")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not verify for client use: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "origin-1.example.com"}); err != nil {
		t.Errorf("certificate does not verify for server use by its DNS name: %v", err)
	}
}

func TestPeerTemplateRefusesBadIdentities(t *testing.T) {
	for _, id := range []auth.Identity{
		{Role: "admin", ID: "a"},
		{Role: auth.RoleAgent, ID: ""},
		{Role: auth.RoleAgent, ID: "a/b"},
		{Role: auth.RoleAgent, ID: ".."},
		{Role: auth.RoleAgent, ID: "host name"},
		{Role: auth.RoleAgent, ID: strings.Repeat("a", auth.MaxPeerIDLen+1)},
	} {
		if _, err := auth.PeerTemplate(id, time.Now(), time.Now().Add(time.Hour)); err == nil {
			t.Errorf("PeerTemplate(%+v) succeeded, want an error", id)
		}
	}
}

func TestPeerIdentityRefusesCertificatesOutsideTheProfile(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	withURIs := func(uris ...string) *x509.Certificate {
		tmpl, err := auth.PeerTemplate(auth.Identity{Role: auth.RoleAgent, ID: "x"}, time.Now(), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = nil
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		}
		return signed(t, ca, tmpl)
	}
	tests := []struct {
		name string
		uris []string
		want string
	}{
		{"no URI", nil, "no shoal://"},
		{"another scheme only", []string{"spiffe://example.org/agent/x"}, "no shoal://"},
		{"two identities", []string{"shoal://agent/x", "shoal://origin/x"}, "two peer identities"},
		{"unknown role", []string{"shoal://admin/x"}, "unknown role"},
		{"role in capitals", []string{"shoal://Origin/x"}, "unknown role"},
		{"no id", []string{"shoal://agent/"}, "1 to 128 bytes"},
		{"two segments", []string{"shoal://agent/x/y"}, "not allowed"},
		{"escaped slash", []string{"shoal://agent/x%2Fy"}, "not shoal://"},
		{"port", []string{"shoal://agent:1/x"}, "not shoal://"},
		{"query", []string{"shoal://agent/x?role=origin"}, "not shoal://"},
		{"user", []string{"shoal://origin@agent/x"}, "not shoal://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.PeerIdentity(withURIs(tt.uris...))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("PeerIdentity with URIs %q: error %v, want one containing %q", tt.uris, err, tt.want)
			}
		})
	}
	_, err := auth.PeerIdentity(withURIs())
	if !errors.Is(err, auth.ErrNoPeerIdentity) {
		t.Errorf("error for a certificate without identity = %v, want one wrapping ErrNoPeerIdentity", err)
	}
	// A foreign URI beside the identity is ignored.
	id, err := auth.PeerIdentity(withURIs("spiffe://example.org/x", "shoal://tracker/t-1"))
	if err != nil || id.Role != auth.RoleTracker || id.ID != "t-1" {
		t.Fatalf("PeerIdentity beside a SPIFFE URI = %+v, %v; want tracker t-1", id, err)
	}
}

// A certificate the handshake did not verify is no identity, even in the
// profile.
func TestPeerFromTLSNeedsAVerifiedChain(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	tmpl, err := auth.PeerTemplate(auth.Identity{Role: auth.RoleOrigin, ID: "o"}, time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert := signed(t, ca, tmpl)
	if _, err := auth.PeerFromTLS(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}); err == nil {
		t.Error("PeerFromTLS accepted a presented but unverified certificate")
	}
	if _, err := auth.PeerFromTLS(nil); err == nil {
		t.Error("PeerFromTLS accepted a plaintext connection")
	}
	id, err := auth.PeerFromTLS(&tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert, ca.Cert}}})
	if err != nil || id.ID != "o" || id.Role != auth.RoleOrigin {
		t.Fatalf("PeerFromTLS with a verified chain = %+v, %v; want origin o", id, err)
	}
}

// identityServer runs a gRPC health service over TLS with clientAuth and
// reports the identity PeerFromContext saw for each call.
func identityServer(t *testing.T, ca *testpki.CA, clientAuth tls.ClientAuthType) (addr string, seen chan auth.Identity) {
	t.Helper()
	certPEM, keyPEM := ca.IssuePeer(t, auth.RoleTracker, "tracker-1")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	seen = make(chan auth.Identity, 1)
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: ca.Pool(), ClientAuth: clientAuth})),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			id, _ := auth.PeerFromContext(ctx)
			seen <- id
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(g, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String(), seen
}

func callWith(t *testing.T, addr string, tc *tls.Config) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check: %v", err)
	}
}

func TestPeerFromContextReadsTheVerifiedClientCertificate(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	certPEM, keyPEM := ca.IssuePeer(t, auth.RoleAgent, "agent-7")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	client := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"}

	addr, seen := identityServer(t, ca, tls.RequireAndVerifyClientCert)
	callWith(t, addr, client)
	if id := <-seen; id.Role != auth.RoleAgent || id.ID != "agent-7" || !id.HasIP(netip.MustParseAddr("127.0.0.1")) {
		t.Fatalf("PeerFromContext on an mTLS call = %+v, want agent agent-7 at 127.0.0.1", id)
	}

	// A server that asks for a certificate without verifying it gets no
	// identity from it: anyone can present one.
	addr, seen = identityServer(t, ca, tls.RequestClientCert)
	other := testpki.NewCA(t, "another CA")
	certPEM, keyPEM = other.IssuePeer(t, auth.RoleOrigin, "origin-1")
	forged, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	callWith(t, addr, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{forged}, ServerName: "localhost"})
	if id := <-seen; id.ID != "" {
		t.Fatalf("PeerFromContext on an unverified certificate = %+v, want no identity", id)
	}
}

func TestOwnIdentity(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	certPEM, keyPEM := ca.IssuePeer(t, auth.RoleAgent, "node-17")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, leaf := range []bool{true, false} {
		if !leaf {
			pair.Leaf = nil
		}
		if id, err := auth.OwnIdentity(&pair); err != nil || id.ID != "node-17" || id.Role != auth.RoleAgent {
			t.Fatalf("OwnIdentity (leaf parsed: %t) = %+v, %v; want agent node-17", leaf, id, err)
		}
	}
	certPEM, keyPEM = ca.Issue(t, "plain", 5)
	if pair, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.OwnIdentity(&pair); !errors.Is(err, auth.ErrNoPeerIdentity) {
		t.Fatalf("OwnIdentity of a certificate outside the profile: %v, want ErrNoPeerIdentity", err)
	}
}
