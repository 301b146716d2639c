package auth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// handlerConfig is usersConfig with a build network of 127.0.0.0/8, so that
// requests from httptest clients come from a build machine.
func handlerConfig(t *testing.T) Config {
	cfg := usersConfig(t)
	cfg.Rules[3].Machines = []string{"cidr:127.0.0.0/8"}
	return cfg
}

// tokenCall serves one request to the token endpoint from addr.
func tokenCall(a *Authorizer, r *http.Request, addr string) *httptest.ResponseRecorder {
	r.RemoteAddr = addr
	w := httptest.NewRecorder()
	a.TokenHandler().ServeHTTP(w, r)
	return w
}

func getToken(a *Authorizer, query, user, pass, addr string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", TokenPath+"?"+query, nil)
	if user != "" {
		r.SetBasicAuth(user, pass)
	}
	return tokenCall(a, r, addr)
}

func postToken(a *Authorizer, form url.Values, addr string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", TokenPath, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return tokenCall(a, r, addr)
}

// decodeToken reads a 200 token response and the access its token grants.
func decodeToken(t *testing.T, a *Authorizer, w *httptest.ResponseRecorder) (tokenResponse, []Access) {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("token endpoint: %d %s", w.Code, w.Body)
	}
	var resp tokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatalf("token response %s: %v", w.Body, err)
	}
	c, err := a.tokens.verify(resp.AccessToken)
	if err != nil {
		t.Fatalf("the issued token does not verify: %v", err)
	}
	return resp, c.Access
}

const build, office = "127.0.0.1:40000", "192.0.2.9:40000"

func TestTokenGET(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthorizer(t, handlerConfig(t), clock)
	q := "service=shoal&scope=repository:path1/base:pull,push&scope=repository:path2/app:pull,push&scope=registry:catalog:*"
	for _, c := range []struct {
		name       string
		user, pass string
		addr       string
		want       []Access
	}{
		{"anonymous gets the public pull only", "", "", office, []Access{
			{Type: "repository", Name: "path1/base", Actions: []string{"pull"}},
			{Type: "registry", Name: "catalog", Actions: []string{"*"}},
		}},
		{"alice from the office: pulls, no push", "alice", "s3cret", office, []Access{
			{Type: "repository", Name: "path1/base", Actions: []string{"pull"}},
			{Type: "repository", Name: "path2/app", Actions: []string{"pull"}},
			{Type: "registry", Name: "catalog", Actions: []string{"*"}},
		}},
		{"alice from a build machine: everything asked", "alice", "s3cret", build, []Access{
			{Type: "repository", Name: "path1/base", Actions: []string{"pull", "push"}},
			{Type: "repository", Name: "path2/app", Actions: []string{"pull", "push"}},
			{Type: "registry", Name: "catalog", Actions: []string{"*"}},
		}},
		{"mallory: path2 denied, silently", "mallory", "pw", office, []Access{
			{Type: "repository", Name: "path1/base", Actions: []string{"pull"}},
			{Type: "registry", Name: "catalog", Actions: []string{"*"}},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, access := decodeToken(t, a, getToken(a, q, c.user, c.pass, c.addr))
			if !reflect.DeepEqual(access, c.want) {
				t.Errorf("granted %+v\nwant %+v", access, c.want)
			}
			if resp.Token == "" || resp.Token != resp.AccessToken {
				t.Errorf("token %q and access_token %q must both be set and equal", resp.Token, resp.AccessToken)
			}
			if resp.ExpiresIn != 300 || resp.IssuedAt != clock.Now().Format(time.RFC3339) {
				t.Errorf("expires_in %d issued_at %s, want 300 and %s", resp.ExpiresIn, resp.IssuedAt, clock.Now().Format(time.RFC3339))
			}
			if resp.RefreshToken != "" {
				t.Error("a refresh token without offline_token=true")
			}
			if resp.Scope != nil {
				t.Error("the GET answer carries the OAuth2 form's scope field")
			}
		})
	}
}

func TestTokenGETExpandsWildcardAndMergesScopes(t *testing.T) {
	a := newTestAuthorizer(t, handlerConfig(t), nil)
	_, access := decodeToken(t, a, getToken(a,
		"scope=repository:path1/base:pull&scope=repository:path1/base:push%20repository:x:*", "alice", "s3cret", build))
	want := []Access{
		{Type: "repository", Name: "path1/base", Actions: []string{"pull", "push"}},
		{Type: "repository", Name: "x", Actions: []string{"pull", "push"}}, // * = all the rules allow
	}
	if !reflect.DeepEqual(access, want) {
		t.Errorf("granted %+v\nwant %+v", access, want)
	}
}

func TestTokenGETRefusals(t *testing.T) {
	a := newTestAuthorizer(t, handlerConfig(t), nil)
	for _, c := range []struct {
		name       string
		query      string
		user, pass string
		status     int
		code       string
	}{
		{"wrong password", "scope=repository:path1/base:pull", "alice", "nope", 401, "UNAUTHORIZED"},
		{"unknown user", "scope=repository:path1/base:pull", "zed", "s3cret", 401, "UNAUTHORIZED"},
		{"another service", "service=other&scope=repository:path1/base:pull", "", "", 400, "UNSUPPORTED"},
		{"malformed scope", "scope=pull", "", "", 400, "UNSUPPORTED"},
		{"account is not the user", "account=bob", "alice", "s3cret", 400, "UNSUPPORTED"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := getToken(a, c.query, c.user, c.pass, office)
			var body struct {
				Errors []struct{ Code, Message string }
			}
			_ = json.Unmarshal(w.Body.Bytes(), &body)
			if w.Code != c.status || len(body.Errors) != 1 || body.Errors[0].Code != c.code {
				t.Fatalf("%d %s, want %d with error code %s", w.Code, w.Body, c.status, c.code)
			}
			if c.status == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("401 without a Basic challenge: %q", w.Header().Get("WWW-Authenticate"))
			}
			if strings.Contains(w.Body.String(), "eyJ") {
				t.Errorf("a refusal carries a token: %s", w.Body)
			}
		})
	}
	r := httptest.NewRequest("GET", TokenPath, nil)
	r.Header.Set("Authorization", "Bearer whatever")
	if w := tokenCall(a, r, office); w.Code != 401 {
		t.Errorf("a bearer token at the token endpoint: %d, want 401 (no exchanging tokens for fresh ones)", w.Code)
	}
	if w := tokenCall(a, httptest.NewRequest("PUT", TokenPath, nil), office); w.Code != 405 || w.Header().Get("Allow") != "GET, POST" {
		t.Errorf("PUT: %d Allow %q, want 405 naming GET, POST", w.Code, w.Header().Get("Allow"))
	}
}

func TestTokenOfflineAndRefresh(t *testing.T) {
	clock := newTestClock()
	cfg := handlerConfig(t)
	a := newTestAuthorizer(t, cfg, clock)

	// GET with offline_token, as `docker login` against GET-only servers.
	resp, _ := decodeToken(t, a, getToken(a, "offline_token=true&client_id=docker", "alice", "s3cret", build))
	if resp.RefreshToken == "" {
		t.Fatal("GET offline_token=true with credentials gave no refresh token")
	}
	anon, _ := decodeToken(t, a, getToken(a, "offline_token=true&client_id=docker", "", "", build))
	if anon.RefreshToken != "" {
		t.Error("an anonymous client got a refresh token")
	}

	// POST password grant, access_type=offline: what docker login does.
	w := postToken(a, url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"s3cret"},
		"client_id": {"docker"}, "access_type": {"offline"}, "service": {"shoal"},
		"scope": {"repository:path2/app:pull,push repository:path1/base:pull"}}, build)
	resp, access := decodeToken(t, a, w)
	if resp.RefreshToken == "" || resp.Scope == nil || *resp.Scope != "repository:path2/app:pull,push repository:path1/base:pull" {
		t.Fatalf("password grant: %s; want a refresh token and the granted scope", w.Body)
	}
	if resp.Token != "" {
		t.Errorf("the OAuth2 answer carries the GET form's token field: %s", w.Body)
	}
	if len(access) != 2 {
		t.Errorf("granted %+v", access)
	}
	refresh := resp.RefreshToken

	// The refresh grant, as dockerd with a stored identity token; from
	// the office now, so the grant follows the rules for where it is.
	clock.Advance(10 * time.Minute)
	w = postToken(a, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {"docker"},
		"scope": {"repository:path2/app:pull,push"}}, office)
	resp, access = decodeToken(t, a, w)
	if want := []Access{{Type: "repository", Name: "path2/app", Actions: []string{"pull"}}}; !reflect.DeepEqual(access, want) {
		t.Errorf("refreshed grant %+v, want %+v", access, want)
	}
	if resp.RefreshToken != refresh {
		t.Errorf("the refresh grant answered refresh token %q, want the same one back", resp.RefreshToken)
	}
	if *resp.Scope != "repository:path2/app:pull" {
		t.Errorf("scope %q", *resp.Scope)
	}

	// An access token is no refresh token.
	w = postToken(a, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {resp.AccessToken}, "client_id": {"docker"}}, office)
	if w.Code != 401 || !strings.Contains(w.Body.String(), `"error":"invalid_grant"`) {
		t.Errorf("an access token as refresh token: %d %s, want 401 invalid_grant", w.Code, w.Body)
	}

	// Changing alice's password revokes her refresh tokens.
	replaceFile(t, cfg.Htpasswd, []byte(readHtpasswdWith(t, map[string]string{"alice": "changed", "mallory": "pw"})), time.Now().Add(time.Hour))
	clock.Advance(2 * htpasswdCheckInterval)
	w = postToken(a, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {"docker"}}, office)
	if w.Code != 401 || !strings.Contains(w.Body.String(), "log in again") {
		t.Errorf("a refresh token after a password change: %d %s, want 401 asking to log in again", w.Code, w.Body)
	}

	// And refresh tokens expire.
	w = postToken(a, url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"changed"}, "client_id": {"c"}, "access_type": {"offline"}}, office)
	resp, _ = decodeToken(t, a, w)
	clock.Advance(cfg.Token.RefreshTTL + time.Hour)
	if w := postToken(a, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {resp.RefreshToken}, "client_id": {"c"}}, office); w.Code != 401 {
		t.Errorf("an expired refresh token: %d %s, want 401", w.Code, w.Body)
	}
}

// readHtpasswdWith returns the content of an htpasswd file for users.
func readHtpasswdWith(t *testing.T, users map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(writeHtpasswd(t, t.TempDir(), users))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTokenPOSTRefusals(t *testing.T) {
	a := newTestAuthorizer(t, handlerConfig(t), nil)
	for _, c := range []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"no client_id", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"s3cret"}}, 400, "invalid_request"},
		{"unsupported grant", url.Values{"grant_type": {"client_credentials"}, "client_id": {"c"}}, 400, "unsupported_grant_type"},
		{"authorization_code is reserved", url.Values{"grant_type": {"authorization_code"}, "client_id": {"c"}}, 400, "unsupported_grant_type"},
		{"no grant", url.Values{"client_id": {"c"}}, 400, "unsupported_grant_type"},
		{"wrong password", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"x"}, "client_id": {"c"}}, 401, "invalid_grant"},
		{"no refresh token", url.Values{"grant_type": {"refresh_token"}, "client_id": {"c"}}, 401, "invalid_grant"},
		{"garbage refresh token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x.y.z"}, "client_id": {"c"}}, 401, "invalid_grant"},
		{"another service", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"s3cret"}, "client_id": {"c"}, "service": {"other"}}, 400, "invalid_request"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := postToken(a, c.form, office)
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			_ = json.Unmarshal(w.Body.Bytes(), &body)
			if w.Code != c.status || body.Error != c.code || body.Description == "" {
				t.Fatalf("%d %s, want %d with error %s and a description", w.Code, w.Body, c.status, c.code)
			}
		})
	}
}

// registryStub is the least of a registry that the token dance needs:
// /v2/ challenges anonymous clients, and a repository's tags list needs
// pull, answered through the Authorizer as the origin does.
func registryStub(a *Authorizer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(TokenPath, a.TokenHandler())
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		s, err := a.Authenticate(r)
		repo := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v2/"), "/tags/list")
		var scope []Access
		if repo != "" {
			scope = []Access{{Type: "repository", Name: repo, Actions: []string{"pull"}}}
		}
		switch {
		case err != nil, s.Anonymous() && repo == "":
			w.Header().Set("WWW-Authenticate", a.Challenge(r, scope, false))
			w.WriteHeader(http.StatusUnauthorized)
		case repo == "":
			w.WriteHeader(http.StatusOK)
		case !a.Decide(s, repo, Pull).Allowed:
			w.Header().Set("WWW-Authenticate", a.Challenge(r, scope, s.Token != nil))
			w.WriteHeader(http.StatusUnauthorized)
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{"name": repo, "tags": []string{"v1"}})
		}
	})
	return mux
}

// TestGoContainerregistryTokenDance runs crane's own transport (the
// challenge parsing, GET token flow, OAuth2 refresh flow) against the
// token endpoint.
func TestGoContainerregistryTokenDance(t *testing.T) {
	a := newTestAuthorizer(t, handlerConfig(t), nil)
	srv := httptest.NewServer(registryStub(a))
	defer srv.Close()
	reg, err := name.NewRegistry(strings.TrimPrefix(srv.URL, "http://"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	w := postToken(a, url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"s3cret"}, "client_id": {"docker"}, "access_type": {"offline"}}, build)
	login, _ := decodeToken(t, a, w)

	tagsList := func(auth authn.Authenticator, repo string) (int, error) {
		rt, err := transport.NewWithContext(context.Background(), reg, auth, http.DefaultTransport,
			[]string{"repository:" + repo + ":pull"})
		if err != nil {
			return 0, err
		}
		resp, err := (&http.Client{Transport: rt}).Get(srv.URL + "/v2/" + repo + "/tags/list")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	for _, c := range []struct {
		name string
		auth authn.Authenticator
		repo string
		want int
	}{
		{"anonymous, public", authn.Anonymous, "path1/base", 200},
		{"anonymous, private", authn.Anonymous, "path2/app", 401},
		{"Basic credentials, private", &authn.Basic{Username: "alice", Password: "s3cret"}, "path2/app", 200},
		{"identity token (OAuth2 refresh), private", authn.FromConfig(authn.AuthConfig{IdentityToken: login.RefreshToken}), "path2/app", 200},
		{"mallory, private", &authn.Basic{Username: "mallory", Password: "pw"}, "path2/app", 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, err := tagsList(c.auth, c.repo)
			var terr *transport.Error
			if errors.As(err, &terr) {
				code, err = terr.StatusCode, nil
			}
			if err != nil || code != c.want {
				t.Fatalf("tags list of %s: %d, %v; want %d", c.repo, code, err, c.want)
			}
		})
	}
	if _, err := tagsList(&authn.Basic{Username: "alice", Password: "wrong"}, "path2/app"); err == nil {
		t.Error("crane with a wrong password got through")
	}
}
