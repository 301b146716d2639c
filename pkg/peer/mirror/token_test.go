package mirror

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// tokenAnswer is one answer of a token endpoint.
type tokenAnswer struct {
	status int
	header http.Header
	body   []byte
}

// callToken sends method to base's token endpoint with query, the
// Authorization header authz (none if empty) and, for POST, form.
func callToken(t *testing.T, base, method, query, authz string, form url.Values) tokenAnswer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	target := base + auth.TokenPath
	if query != "" {
		target += "?" + query
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, target, err)
	}
	return tokenAnswer{status: resp.StatusCode, header: resp.Header, body: b}
}

func basicAuth(user, password string) string {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(user, password)
	return r.Header.Get("Authorization")
}

// TestTokenEndpointIsProxiedToTheOrigin: GET with its query and Basic
// credentials and the OAuth2 POST form reach the origin's token endpoint
// through the mirror unchanged, and the origin's token comes back, one the
// origin's key verifies, for what was asked.
func TestTokenEndpointIsProxiedToTheOrigin(t *testing.T) {
	clock := newFakeClock()
	o := newAuthOrigin(t, clock)
	srv := newTestMirrorWith(t, testConfig(o.URL), Options{Now: clock.Now})
	keys := auth.NewVerifier(o.key.Public())
	keys.SetClock(clock.Now)
	checkToken := func(what, tok string) {
		t.Helper()
		c, err := keys.VerifyToken(tok, "shoal")
		if err != nil {
			t.Fatalf("%s: the token does not verify with the origin's key: %v", what, err)
		}
		if c.Subject != "alice" || !c.Allows(tokenRepo, auth.Pull) {
			t.Errorf("%s: token for %q granting %+v, want alice's with pull on %s", what, c.Subject, c.Access, tokenRepo)
		}
	}

	query := url.Values{"service": {"shoal"}, "scope": {"repository:" + tokenRepo + ":pull"}, "account": {"alice"}}.Encode()
	a := callToken(t, srv.URL, http.MethodGet, query, basicAuth("alice", tokenPasswords["alice"]), nil)
	var got struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(a.body, &got); a.status != http.StatusOK || err != nil {
		t.Fatalf("GET of a token through the mirror: %d %s", a.status, a.body)
	}
	checkToken("GET", got.Token)
	calls := o.tokenCalls()
	if len(calls) != 1 {
		t.Fatalf("the origin's token endpoint was called %d times, want 1", len(calls))
	}
	if c := calls[0]; c.method != http.MethodGet || c.query != query || c.authorization != basicAuth("alice", tokenPasswords["alice"]) {
		t.Errorf("the origin was sent %s ?%s with Authorization %q; want GET ?%s with alice's Basic credentials", c.method, c.query, c.authorization, query)
	}
	if cc := a.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("GET of a token: Cache-Control %q, want the origin's no-store", cc)
	}

	form := url.Values{
		"grant_type": {"password"}, "client_id": {"containerd"}, "username": {"alice"},
		"password": {tokenPasswords["alice"]}, "service": {"shoal"}, "scope": {"repository:" + tokenRepo + ":pull"},
	}
	a = callToken(t, srv.URL, http.MethodPost, "", "", form)
	if err := json.Unmarshal(a.body, &got); a.status != http.StatusOK || err != nil {
		t.Fatalf("POST of the OAuth2 form through the mirror: %d %s", a.status, a.body)
	}
	checkToken("POST", got.AccessToken)
	calls = o.tokenCalls()
	if c := calls[len(calls)-1]; c.method != http.MethodPost || c.form != form.Encode() || c.contentType != "application/x-www-form-urlencoded" {
		t.Errorf("the origin was sent %s %q (%s); want POST %q (application/x-www-form-urlencoded)", c.method, c.form, c.contentType, form.Encode())
	}
}

// TestTokenEndpointErrorsAreRelayed: what the origin's token endpoint
// refuses, the mirror answers exactly as the origin does (status, body,
// challenge, caching headers); a method it does not serve is a 405; a dead
// origin is a 502 naming it and one answering 503 a 503.
func TestTokenEndpointErrorsAreRelayed(t *testing.T) {
	clock := newFakeClock()
	o := newAuthOrigin(t, clock)
	srv := newTestMirrorWith(t, testConfig(o.URL), Options{Now: clock.Now})
	scope := "repository:" + tokenRepo + ":pull"
	for _, c := range []struct {
		name, method, query, authz string
		form                       url.Values
		status                     int
	}{
		{"GET with a wrong password", http.MethodGet, "service=shoal&scope=" + url.QueryEscape(scope), basicAuth("alice", "wrong"), nil, http.StatusUnauthorized},
		{"GET for another service", http.MethodGet, "service=other&scope=" + url.QueryEscape(scope), basicAuth("alice", tokenPasswords["alice"]), nil, http.StatusBadRequest},
		{"GET with a bearer token", http.MethodGet, "service=shoal", "Bearer abc", nil, http.StatusUnauthorized},
		{"POST with a wrong password", http.MethodPost, "", "", url.Values{"grant_type": {"password"}, "client_id": {"x"}, "username": {"alice"}, "password": {"wrong"}}, http.StatusUnauthorized},
		{"POST without client_id", http.MethodPost, "", "", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {tokenPasswords["alice"]}}, http.StatusBadRequest},
		{"POST of an unknown grant", http.MethodPost, "", "", url.Values{"grant_type": {"magic"}, "client_id": {"x"}}, http.StatusBadRequest},
	} {
		want := callToken(t, o.URL, c.method, c.query, c.authz, c.form)
		got := callToken(t, srv.URL, c.method, c.query, c.authz, c.form)
		if want.status != c.status {
			t.Fatalf("%s: the origin answered %d %s, the test expects %d", c.name, want.status, want.body, c.status)
		}
		if got.status != want.status || !bytes.Equal(got.body, want.body) {
			t.Errorf("%s: the mirror answered %d %s, the origin %d %s", c.name, got.status, got.body, want.status, want.body)
		}
		for _, h := range []string{"WWW-Authenticate", "Content-Type", "Cache-Control", "Pragma"} {
			if got.header.Get(h) != want.header.Get(h) {
				t.Errorf("%s: the mirror's %s is %q, the origin's %q", c.name, h, got.header.Get(h), want.header.Get(h))
			}
		}
	}

	a := callToken(t, srv.URL, http.MethodPut, "", "", nil)
	checkStatus(t, "PUT of the token endpoint", answer{status: a.status, body: a.body}, http.StatusMethodNotAllowed, ociapi.CodeUnsupported)
	if allow := a.header.Get("Allow"); allow != "GET, POST" {
		t.Errorf("PUT of the token endpoint: Allow %q, want \"GET, POST\"", allow)
	}

	dead := newTestMirrorWith(t, testConfig("http://"+closedAddr(t)), Options{})
	a = callToken(t, dead.URL, http.MethodGet, "service=shoal", "", nil)
	checkOriginError(t, http.MethodGet, auth.TokenPath, answer{status: a.status, body: a.body}, http.StatusBadGateway, "connection refused")

	unavailable := newACLOrigin(t)
	unavailable.down.Store(true)
	busy := newTestMirrorWith(t, testConfig(unavailable.URL), Options{})
	a = callToken(t, busy.URL, http.MethodPost, "", "", url.Values{"grant_type": {"password"}})
	checkOriginError(t, http.MethodPost, auth.TokenPath, answer{status: a.status, body: a.body}, http.StatusServiceUnavailable, unavailable.URL, "503")
}
