package mirror

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/fakeclock"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// tokenPaths are the requests of a pull of tokenRepo's image and what
// each must return.
var tokenPaths = []struct {
	path string
	want []byte
}{
	{"/v2/" + tokenRepo + "/manifests/v1", tokenManifest},
	{"/v2/" + tokenRepo + "/manifests/" + tokenManD.String(), tokenManifest},
	{"/v2/" + tokenRepo + "/blobs/" + tokenBlobD.String(), tokenBlob},
}

// tokenMirror is a mirror of o that verifies tokens with o's key, on
// clock, holding tokenRepo's blob complete.
func tokenMirror(t *testing.T, o *authOrigin, clock *fakeclock.Clock, withKeys bool) *httptest.Server {
	t.Helper()
	opts := Options{Blobs: &fakeBlobs{local: map[digest.Digest][]byte{tokenBlobD: tokenBlob}}, Now: clock.Now}
	if withKeys {
		keys := auth.NewVerifier(o.key.Public())
		keys.SetClock(clock.Now)
		opts.Tokens = keys
	}
	return newTestMirrorWith(t, testConfig(o.URL), opts)
}

// pullWithToken is alice's pull as dockerd makes it through the mirror:
// the API root (401 and the origin's challenge), a token from the realm it
// names (the mirror's token endpoint), then the image with the token. It
// returns the token.
func pullWithToken(t *testing.T, srv *httptest.Server, what string) string {
	t.Helper()
	if a := get(t, srv, http.MethodGet, "/v2/", ""); a.status != http.StatusUnauthorized {
		t.Fatalf("%s: anonymous GET /v2/: %d %s, want 401 and a challenge", what, a.status, a.body)
	}
	tok := fetchToken(t, srv.URL, "alice", "repository:"+tokenRepo+":pull")
	for _, p := range tokenPaths {
		if a := get(t, srv, http.MethodGet, p.path, "Bearer "+tok); a.status != http.StatusOK || !bytes.Equal(a.body, p.want) {
			t.Fatalf("%s: alice's GET %s with her token: %d %q, want 200 %q", what, p.path, a.status, a.body, p.want)
		}
	}
	return tok
}

// forgeToken signs a token like the origin's with key, for sub, aud,
// access to repo, issued at now for ttl.
func forgeToken(t *testing.T, key *auth.Key, sub, aud, repo string, now time.Time, ttl time.Duration) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": "shoal", "sub": sub, "aud": aud, "exp": now.Add(ttl).Unix(), "nbf": now.Unix(), "iat": now.Unix(),
		"access": []auth.Access{{Type: "repository", Name: repo, Actions: []string{"pull"}}},
	})
	tok.Header["kid"] = key.ID()
	s, err := tok.SignedString(key.Private())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTokenUserReadsCachedContentWhileTheOriginIsDown: alice pulled a
// private image through the mirror with a token. While the origin's
// registry API is down (its token endpoint still issues tokens), her next
// token, another string, is served what she pulled, by tag and by digest,
// because it verifies with the origin's key for its service and grants
// pull on the repository. Tokens that do not (bob's, another key's,
// another service's, one for another repository, an expired one, an
// anonymous one) are refused, and so is alice's new token by a mirror
// that does not hold the origin's keys.
func TestTokenUserReadsCachedContentWhileTheOriginIsDown(t *testing.T) {
	clock := newFakeClock()
	o := newAuthOrigin(t, clock)
	srv := tokenMirror(t, o, clock, true)
	noKeys := tokenMirror(t, o, clock, false)
	first := pullWithToken(t, srv, "pull through the mirror with keys")
	noKeysFirst := pullWithToken(t, noKeys, "pull through the mirror without keys")

	o.registryDown.Store(true)
	clock.Advance(DefaultConfig().AuthTTL + time.Second) // the origin's yeses are no longer reused: it must be asked
	next := fetchToken(t, srv.URL, "alice", "repository:"+tokenRepo+":pull")
	if next == first {
		t.Fatal("the origin issued the same token twice: the test needs a new one")
	}
	for _, p := range tokenPaths {
		for _, tok := range []string{first, next} {
			if a := get(t, srv, http.MethodGet, p.path, "Bearer "+tok); a.status != http.StatusOK || !bytes.Equal(a.body, p.want) {
				t.Errorf("alice's GET %s with a token of hers while the origin is down: %d %q, want 200 %q", p.path, a.status, a.body, p.want)
			}
		}
		if a := get(t, srv, http.MethodHead, p.path, "Bearer "+next); a.status != http.StatusOK {
			t.Errorf("alice's HEAD %s with her new token while the origin is down: %d", p.path, a.status)
		}
	}

	other, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	refused := []struct{ who, authz string }{
		{"bob's token", "Bearer " + fetchToken(t, srv.URL, "bob", "repository:"+tokenRepo+":pull")},
		{"alice's token for another repository", "Bearer " + fetchToken(t, srv.URL, "alice", "repository:"+otherRepo+":pull")},
		{"an anonymous token", "Bearer " + forgeToken(t, o.key, "", "shoal", tokenRepo, now, time.Minute)},
		{"a token for alice by another key", "Bearer " + forgeToken(t, other, "alice", "shoal", tokenRepo, now, time.Minute)},
		{"a token for alice for another service", "Bearer " + forgeToken(t, o.key, "alice", "other", tokenRepo, now, time.Minute)},
		{"alice's expired token", "Bearer " + forgeToken(t, o.key, "alice", "shoal", tokenRepo, now.Add(-time.Hour), 5*time.Minute)},
		{"alice's token tampered with", "Bearer " + next[:len(next)-4] + "AAAA"},
		{"alice's Basic credentials with a wrong password", basicAuth("alice", "wrong")},
		{"anonymous", ""},
	}
	for _, p := range tokenPaths {
		for _, r := range refused {
			a := get(t, srv, http.MethodGet, p.path, r.authz)
			checkOriginError(t, http.MethodGet, p.path+" by "+r.who, a, http.StatusServiceUnavailable, o.URL)
			if bytes.Contains(a.body, p.want) {
				t.Errorf("GET %s by %s while the origin is down: the private content was sent", p.path, r.who)
			}
		}
		// Without the origin's keys only the credentials the origin said
		// yes to are known: alice's earlier token, not her new one.
		if a := get(t, noKeys, http.MethodGet, p.path, "Bearer "+noKeysFirst); a.status != http.StatusOK {
			t.Errorf("GET %s with the token the origin said yes to, through a mirror without keys: %d %s", p.path, a.status, a.body)
		}
		checkOriginError(t, http.MethodGet, p.path+" with alice's new token, through a mirror without keys",
			get(t, noKeys, http.MethodGet, p.path, "Bearer "+next), http.StatusServiceUnavailable, o.URL)
	}

	clock.Advance(5*time.Minute + time.Minute) // past the new token's expiry and the leeway
	for _, p := range tokenPaths {
		checkOriginError(t, http.MethodGet, p.path+" with alice's token, expired while the origin is down",
			get(t, srv, http.MethodGet, p.path, "Bearer "+next), http.StatusServiceUnavailable, o.URL)
	}
}

// TestTokenUserNeverDecidesWhileTheOriginIsUp: a token that verifies is
// no pass while the origin answers. When the origin refuses alice (the
// rules changed), her valid new token is refused with the origin's answer
// although the mirror holds what she pulled before; and that refusal is the
// origin's last word for her, so her tokens are refused while it is down
// too.
func TestTokenUserNeverDecidesWhileTheOriginIsUp(t *testing.T) {
	clock := newFakeClock()
	o := newAuthOrigin(t, clock)
	srv := tokenMirror(t, o, clock, true)
	first := pullWithToken(t, srv, "alice's pull")

	o.revoked.Store(true)
	clock.Advance(DefaultConfig().AuthTTL + time.Second)
	next := fetchToken(t, srv.URL, "alice", "repository:"+tokenRepo+":pull")
	for _, p := range tokenPaths {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			a := get(t, srv, m, p.path, "Bearer "+next)
			if a.status != http.StatusUnauthorized {
				t.Errorf("alice's %s %s with a valid token the origin refuses: %d %s, want the origin's 401", m, p.path, a.status, a.body)
			}
			if bytes.Contains(a.body, p.want) {
				t.Errorf("alice's %s %s with a valid token the origin refuses: the content was sent", m, p.path)
			}
		}
	}

	o.registryDown.Store(true)
	clock.Advance(DefaultConfig().AuthTTL + time.Second)
	for _, p := range tokenPaths {
		for _, tok := range []string{first, next} {
			a := get(t, srv, http.MethodGet, p.path, "Bearer "+tok)
			checkOriginError(t, http.MethodGet, p.path+" with alice's token after the origin refused her", a, http.StatusServiceUnavailable, o.URL)
		}
	}
}
