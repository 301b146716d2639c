package mirror

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestParseBearerChallenge(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // rewritten as the mirror writes it; "" when not ok
	}{
		{`Bearer realm="https://o/auth/token",service="shoal",scope="repository:a/b:pull,push"`,
			`Bearer realm="https://o/auth/token",service="shoal",scope="repository:a/b:pull,push"`},
		{`bearer Realm="x", service=shoal ,scope="a b",error="insufficient_scope"`,
			`Bearer Realm="x",service="shoal",scope="a b",error="insufficient_scope"`},
		{`Bearer realm="with \"quotes\" and \\ backslash"`, `Bearer realm="with \"quotes\" and \\ backslash"`},
		{`Basic realm="shoal"`, ""},
		{`Bearer`, ""},
		{`Bearer realm="unterminated`, ""},
		{`Bearer realm="x", Basic realm="y"`, ""},
		{`Bearer realm="x" service="y"`, ""},
	} {
		p, ok := parseBearerChallenge(c.in)
		switch {
		case c.want == "" && ok:
			t.Errorf("parseBearerChallenge(%q) = %v, want not ok", c.in, p)
		case c.want != "" && !ok:
			t.Errorf("parseBearerChallenge(%q) not ok, want %q", c.in, c.want)
		case ok && p.String() != c.want:
			t.Errorf("parseBearerChallenge(%q) = %q, want %q", c.in, p.String(), c.want)
		}
	}
}

// challengeOrigin answers every request 401 with challenge.
func challengeOrigin(t *testing.T, challenge *atomic.Value) *httptest.Server {
	t.Helper()
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, c := range strings.Split(challenge.Load().(string), "\n") {
			w.Header().Add("WWW-Authenticate", c)
		}
		originError(w, http.StatusUnauthorized, "UNAUTHORIZED")
	}))
	t.Cleanup(o.Close)
	return o
}

// TestChallengesNameTheAgentsTokenEndpoint: whatever route relays the
// origin's 401 (the API root, a manifest by tag or digest, a blob, a tag
// list, the catalog), its Bearer challenge names the mirror's own token
// endpoint, by the scheme and Host the client used, with service, scope
// and error as the origin sent them. A realm that is not a Shoal token
// endpoint (an external token service) and other schemes are relayed
// untouched. The origin's service is remembered from its challenges.
func TestChallengesNameTheAgentsTokenEndpoint(t *testing.T) {
	var challenge atomic.Value
	o := challengeOrigin(t, &challenge)
	m := newRawMirror(t, o.URL)
	d := testBlobDigest.String()
	targets := []string{
		"/v2/", "/v2/team/app/manifests/latest", "/v2/team/app/manifests/" + d, "/v2/team/app/blobs/" + d,
		"/v2/team/app/tags/list", "/v2/_catalog",
	}
	for _, c := range []struct{ name, origin, want string }{
		{
			"the origin's own realm",
			`Bearer realm="http://10.0.0.5:5000/auth/token",service="shoal",scope="repository:team/app:pull"`,
			`Bearer realm="http://localhost:5050/auth/token",service="shoal",scope="repository:team/app:pull"`,
		},
		{
			"a configured realm on the origin's public name, with an error",
			`Bearer realm="https://registry.example.com/auth/token",service="svc",scope="repository:team/app:pull",error="insufficient_scope"`,
			`Bearer realm="http://localhost:5050/auth/token",service="svc",scope="repository:team/app:pull",error="insufficient_scope"`,
		},
		{
			"an external token service",
			`Bearer realm="https://auth.example.com/token",service="shoal",scope="repository:team/app:pull"`,
			`Bearer realm="https://auth.example.com/token",service="shoal",scope="repository:team/app:pull"`,
		},
		{
			"a Basic challenge beside a Bearer one",
			"Basic realm=\"shoal\"\nBearer realm=\"http://o/auth/token\",service=\"shoal\"",
			"Basic realm=\"shoal\"\nBearer realm=\"http://localhost:5050/auth/token\",service=\"shoal\"",
		},
	} {
		challenge.Store(c.origin)
		for _, target := range targets {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				if method == http.MethodHead && target == "/v2/team/app/tags/list" {
					continue
				}
				req := httptest.NewRequest(method, target, nil)
				req.Host = "localhost:5050"
				rec := httptest.NewRecorder()
				m.ServeHTTP(rec, req)
				got := strings.Join(rec.Result().Header.Values("WWW-Authenticate"), "\n")
				if rec.Code != http.StatusUnauthorized || got != c.want {
					t.Errorf("%s: %s %s: %d with challenge %q, want 401 with %q", c.name, method, target, rec.Code, got, c.want)
				}
			}
		}
	}
	if svc := m.service.Load(); svc == nil || *svc != "shoal" {
		t.Errorf("the service remembered from the origin's challenges is %v, want shoal", svc)
	}

	// Over TLS the realm is https.
	challenge.Store(`Bearer realm="http://o/auth/token",service="shoal"`)
	tlsMirror := httptest.NewTLSServer(m)
	defer tlsMirror.Close()
	resp, err := tlsMirror.Client().Get(tlsMirror.URL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := `Bearer realm="` + tlsMirror.URL + `/auth/token",service="shoal"`
	if got := resp.Header.Get("WWW-Authenticate"); got != want {
		t.Errorf("over TLS: challenge %q, want %q", got, want)
	}
}
