package mirror

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/fakeclock"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// The content and users of authOrigin: tokenRepo holds one image, which
// alice may pull and bob may not; otherRepo is alice's too, and empty.
const (
	tokenRepo = "path2/app"
	otherRepo = "path2/other"
)

var (
	tokenPasswords = map[string]string{"alice": "alice-secret", "bob": "bob-secret"}
	tokenBlob      = []byte("path2 layer")
	tokenBlobD     = digest.FromBytes(tokenBlob)
	tokenManifest  = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"repo":"path2/app"}}`)
	tokenManD      = digest.FromBytes(tokenManifest)
)

// authOrigin is an origin with real access control: pkg/auth's Authorizer
// with an htpasswd file, rules (path2/** for alice) and a signing key
// authenticates and decides every registry request and serves the token
// endpoint, on the test's clock. Its switches: registryDown makes the
// registry API answer 503 while the token endpoint still answers (an
// origin whose storage is down); revoked makes it refuse alice as if the
// rules had changed.
type authOrigin struct {
	*httptest.Server
	key   *auth.Key
	authz *auth.Authorizer

	registryDown atomic.Bool
	revoked      atomic.Bool

	mu            sync.Mutex
	tokenRequests []tokenRequest
}

// tokenRequest is what the origin's token endpoint was sent.
type tokenRequest struct {
	method, query, authorization, contentType, form string
}

func newAuthOrigin(t *testing.T, clock *fakeclock.Clock) *authOrigin {
	t.Helper()
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := auth.DefaultConfig()
	cfg.Htpasswd = writeTestHtpasswd(t, tokenPasswords)
	cfg.Rules = []auth.Rule{{Repositories: []string{"path2/**"}, Subjects: []string{"user:alice"}, Actions: []auth.Action{auth.Pull}}}
	authz, err := auth.New(cfg, auth.Options{Key: key, Logger: slog.New(slog.DiscardHandler), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	o := &authOrigin{key: key, authz: authz}
	tokens := authz.TokenHandler()
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == auth.TokenPath {
			form, _ := io.ReadAll(r.Body)
			o.mu.Lock()
			o.tokenRequests = append(o.tokenRequests, tokenRequest{r.Method, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(form)})
			o.mu.Unlock()
			r.Body = io.NopCloser(strings.NewReader(string(form)))
			tokens.ServeHTTP(w, r)
			return
		}
		if o.registryDown.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		o.serveRegistry(w, r)
	}))
	t.Cleanup(o.Close)
	return o
}

// serveRegistry answers as the origin does: 401 with a challenge for the
// scope to the anonymous, bad credentials and a token lacking the scope,
// 403 to a user the rules refuse.
func (o *authOrigin) serveRegistry(w http.ResponseWriter, r *http.Request) {
	rt, perr := parseRoute(r.URL.EscapedPath())
	if perr != nil {
		originError(w, perr.Status, perr.Code)
		return
	}
	s, err := o.authz.Authenticate(r)
	if rt.kind == routePing {
		if err != nil || s.Anonymous() {
			w.Header().Set("WWW-Authenticate", o.authz.Challenge(r, nil, false))
			originError(w, http.StatusUnauthorized, "UNAUTHORIZED")
			return
		}
		io.WriteString(w, "{}")
		return
	}
	scope := []auth.Access{{Type: "repository", Name: rt.name, Actions: []string{string(auth.Pull)}}}
	allowed := err == nil && o.authz.Decide(s, rt.name, auth.Pull).Allowed && !(o.revoked.Load() && s.User == "alice")
	switch {
	case allowed:
	case err != nil || s.Anonymous() || s.Token != nil:
		w.Header().Set("WWW-Authenticate", o.authz.Challenge(r, scope, err == nil && s.Token != nil))
		originError(w, http.StatusUnauthorized, "UNAUTHORIZED")
		return
	default:
		originError(w, http.StatusForbidden, "DENIED")
		return
	}
	switch {
	case rt.name != tokenRepo:
		originError(w, http.StatusNotFound, "NAME_UNKNOWN")
	case rt.kind == routeBlob && rt.ref == tokenBlobD.String():
		w.Header().Set("Content-Length", strconv.Itoa(len(tokenBlob)))
		if r.Method == http.MethodGet {
			w.Write(tokenBlob)
		}
	case rt.kind == routeManifest && (rt.ref == "v1" || rt.ref == tokenManD.String()):
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", tokenManD.String())
		w.Write(tokenManifest)
	default:
		originError(w, http.StatusNotFound, "MANIFEST_UNKNOWN")
	}
}

// tokenCalls returns what the token endpoint was sent so far.
func (o *authOrigin) tokenCalls() []tokenRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]tokenRequest(nil), o.tokenRequests...)
}

// writeTestHtpasswd writes users (name -> password) as bcrypt entries at
// the lowest cost and returns the file's path.
func writeTestHtpasswd(t *testing.T, users map[string]string) string {
	t.Helper()
	var b []byte
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, u+":"+string(h)+"\n"...)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fetchToken asks the token endpoint at base (the mirror's or the
// origin's) for user's token for scope with GET and Basic credentials, as
// dockerd and crane do, and returns the token.
func fetchToken(t *testing.T, base, user, scope string) string {
	t.Helper()
	q := url.Values{"service": {"shoal"}, "scope": {scope}}
	req, err := http.NewRequest(http.MethodGet, base+auth.TokenPath+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, tokenPasswords[user])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s as %s: %v", req.URL, user, err)
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.Token == "" {
		t.Fatalf("GET %s as %s: %s, token %q (%v)", req.URL, user, resp.Status, body.Token, err)
	}
	return body.Token
}
