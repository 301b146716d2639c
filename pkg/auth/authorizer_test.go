package auth

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func usersConfig(t *testing.T) Config {
	cfg := policyConfig()
	cfg.Htpasswd = writeHtpasswd(t, t.TempDir(), map[string]string{"alice": "s3cret", "mallory": "pw"})
	cfg.TrustedProxies = []string{"10.1.2.3", "fd00::/64"}
	return cfg
}

func TestAuthenticateCredentials(t *testing.T) {
	a := newTestAuthorizer(t, usersConfig(t), nil)
	req := func(header string) *http.Request {
		r := httptest.NewRequest("GET", "/v2/", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		return r
	}
	basic := func(user, pass string) string {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(user, pass)
		return r.Header.Get("Authorization")
	}

	s, err := a.Authenticate(req(""))
	if err != nil || !s.Anonymous() {
		t.Errorf("no credentials: %+v, %v; want an anonymous subject and no error", s, err)
	}
	s, err = a.Authenticate(req(basic("alice", "s3cret")))
	if err != nil || s.User != "alice" || s.Token != nil || !reflect.DeepEqual(s.Groups, []string{"builders"}) {
		t.Errorf("alice's Basic credentials: %+v, %v; want user alice in group builders", s, err)
	}
	for _, c := range []struct{ why, header string }{
		{"wrong password", basic("alice", "nope")},
		{"unknown user", basic("carol", "s3cret")},
		{"malformed Basic", "Basic !!!"},
		{"another scheme", "Digest username=alice"},
		{"a bearer that is no token", "Bearer s3cret"},
	} {
		if s, err := a.Authenticate(req(c.header)); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%s: %+v, %v; want ErrBadCredentials, never anonymous access", c.why, s, err)
		}
	}
}

func TestBasicWithoutHtpasswdIsBadCredentials(t *testing.T) {
	a := newTestAuthorizer(t, policyConfig(), nil)
	r := httptest.NewRequest("GET", "/v2/", nil)
	r.SetBasicAuth("alice", "s3cret")
	if _, err := a.Authenticate(r); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("Basic credentials with no htpasswd file: %v, want ErrBadCredentials", err)
	}
}

func TestClientAddress(t *testing.T) {
	a := newTestAuthorizer(t, usersConfig(t), nil)
	for _, c := range []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"the TCP peer", "192.0.2.7:5555", nil, "192.0.2.7"},
		{"forwarded headers from an untrusted peer are ignored", "192.0.2.7:5555", []string{"10.0.0.5"}, "192.0.2.7"},
		{"a trusted proxy's forwarded client", "10.1.2.3:5555", []string{"198.51.100.4"}, "198.51.100.4"},
		{"the right-most untrusted hop, not what the client wrote", "10.1.2.3:5555", []string{"10.0.0.5, 198.51.100.4"}, "198.51.100.4"},
		{"trusted hops are skipped", "10.1.2.3:5555", []string{"198.51.100.4, 10.1.2.3"}, "198.51.100.4"},
		{"several headers are one list", "10.1.2.3:5555", []string{"10.0.0.5", "198.51.100.4"}, "198.51.100.4"},
		{"a garbage hop stops at the last trusted one", "10.1.2.3:5555", []string{"10.0.0.5, bogus"}, "10.1.2.3"},
		{"a trusted proxy without the header", "10.1.2.3:5555", nil, "10.1.2.3"},
		{"IPv6 proxy prefix", "[fd00::1]:5555", []string{"2001:db8::9"}, "2001:db8::9"},
		{"IPv4-mapped peer", "[::ffff:192.0.2.7]:5555", nil, "192.0.2.7"},
	} {
		r := httptest.NewRequest("GET", "/v2/", nil)
		r.RemoteAddr = c.remote
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		s, err := a.Authenticate(r)
		if err != nil {
			t.Fatal(err)
		}
		if s.Addr != netip.MustParseAddr(c.want) {
			t.Errorf("%s: address %s, want %s", c.name, s.Addr, c.want)
		}
	}
}

func TestCertNamesComeOnlyFromVerifiedChains(t *testing.T) {
	a := newTestAuthorizer(t, policyConfig(), nil)
	leaf := &x509.Certificate{Subject: pkix.Name{CommonName: "build-1"}, DNSNames: []string{"build-1", "build-1.example.com"}}
	ca := &x509.Certificate{Subject: pkix.Name{CommonName: "cluster CA"}}

	r := httptest.NewRequest("GET", "/v2/", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca}}}
	s, err := a.Authenticate(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"build-1", "build-1.example.com"}; !reflect.DeepEqual(s.CertNames, want) {
		t.Errorf("verified certificate names %q, want %q", s.CertNames, want)
	}

	// Presented but not verified (a server that requests without requiring
	// a certificate from the client CA): proves nothing.
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	if s, _ := a.Authenticate(r); len(s.CertNames) != 0 {
		t.Errorf("names %q taken from an unverified certificate", s.CertNames)
	}
	if d := a.Decide(s, "anything", Push); d.Allowed {
		t.Errorf("an unverified build-1 certificate was let push: %s", d.Reason())
	}
}

func TestChallenge(t *testing.T) {
	a := newTestAuthorizer(t, usersConfig(t), nil)
	scope := []Access{
		{Type: "repository", Name: "path2/app", Actions: []string{"pull", "push"}},
		{Name: "path1/base", Actions: []string{"pull"}},
	}
	r := httptest.NewRequest("GET", "/v2/path2/app/blobs/uploads/", nil)
	r.Host = "registry.example.com:5000"
	want := `Bearer realm="http://registry.example.com:5000/auth/token",service="shoal",scope="repository:path2/app:pull,push repository:path1/base:pull"`
	if got := a.Challenge(r, scope, false); got != want {
		t.Errorf("challenge\n got %s\nwant %s", got, want)
	}
	if got := a.Challenge(r, scope[:1], true); !strings.HasSuffix(got, `scope="repository:path2/app:pull,push",error="insufficient_scope"`) {
		t.Errorf("insufficient scope challenge %s", got)
	}
	if got, want := a.Challenge(r, nil, false), `Bearer realm="http://registry.example.com:5000/auth/token",service="shoal"`; got != want {
		t.Errorf("scopeless challenge\n got %s\nwant %s", got, want)
	}

	r.TLS = &tls.ConnectionState{}
	if got := a.Challenge(r, nil, false); !strings.Contains(got, `realm="https://registry.example.com:5000/auth/token"`) {
		t.Errorf("over TLS: %s, want an https realm", got)
	}
	r.TLS = nil
	r.Header.Set("X-Forwarded-Proto", "https")
	if got := a.Challenge(r, nil, false); !strings.Contains(got, `realm="http://`) {
		t.Errorf("X-Forwarded-Proto from an untrusted peer was believed: %s", got)
	}
	r.RemoteAddr = "10.1.2.3:4444"
	if got := a.Challenge(r, nil, false); !strings.Contains(got, `realm="https://`) {
		t.Errorf("X-Forwarded-Proto from a trusted proxy was ignored: %s", got)
	}

	cfg := usersConfig(t)
	cfg.Token.Realm = "https://auth.example.com/token"
	cfg.Token.Service = `odd "service"`
	b := newTestAuthorizer(t, cfg, nil)
	if got, want := b.Challenge(r, nil, false), `Bearer realm="https://auth.example.com/token",service="odd \"service\""`; got != want {
		t.Errorf("configured realm\n got %s\nwant %s", got, want)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	cfg := usersConfig(t)
	a, err := New(cfg, Options{Key: mustKey(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	a.Check("", netip.Addr{}, nil, "path1/app", Pull)
	a.Check("", netip.Addr{}, nil, "path2/app", Pull)
	a.Check("", netip.Addr{}, nil, "path2/app", Pull)
	r := httptest.NewRequest("GET", "/v2/", nil)
	r.SetBasicAuth("alice", "wrong")
	_, _ = a.Authenticate(r)
	r.Header.Set("Authorization", "Bearer x")
	_, _ = a.Authenticate(r)
	if _, _, err := a.tokens.issue("alice", nil); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP shoal_auth_bad_credentials_total Requests refused for bad credentials, by kind (basic, bearer, scheme, refresh).
# TYPE shoal_auth_bad_credentials_total counter
shoal_auth_bad_credentials_total{kind="basic"} 1
shoal_auth_bad_credentials_total{kind="bearer"} 1
# HELP shoal_auth_decisions_total Access decisions by action and result (allow, deny).
# TYPE shoal_auth_decisions_total counter
shoal_auth_decisions_total{action="admin",result="allow"} 0
shoal_auth_decisions_total{action="admin",result="deny"} 0
shoal_auth_decisions_total{action="delete",result="allow"} 0
shoal_auth_decisions_total{action="delete",result="deny"} 0
shoal_auth_decisions_total{action="pull",result="allow"} 1
shoal_auth_decisions_total{action="pull",result="deny"} 2
shoal_auth_decisions_total{action="push",result="allow"} 0
shoal_auth_decisions_total{action="push",result="deny"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "shoal_auth_decisions_total", "shoal_auth_bad_credentials_total"); err != nil {
		t.Error(err)
	}
}
