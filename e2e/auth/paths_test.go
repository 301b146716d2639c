package auth_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// pathTricks are request-targets that spell a path2 repository (or a
// path2 digest) so that a server comparing names before it cleans or
// decodes them might take it for a path1 name, the public one, or for no
// path2 name at all.
func pathTricks(p *image) []string {
	layer := p.layers[0].digest
	return []string{
		// dot segments
		"/v2/path1/../path2/app/manifests/v1",
		"/v2/path1/app/../../path2/app/manifests/v1",
		"/v2/path1/./../path2/app/manifests/v1",
		"/v2/path2/app/./manifests/v1",
		"/v2/path1/../path2/app/manifests/" + p.digest,
		"/v2/path1/../path2/app/blobs/" + layer,
		"/v2/path1/../path2/app/tags/list",
		"/v2/path1/../path2/app/referrers/" + p.digest,
		// percent-encoding: of the dots, of the slashes, of both
		"/v2/path1/%2e%2e/path2/app/manifests/v1",
		"/v2/path1/%2E%2E/path2/app/manifests/v1",
		"/v2/path1%2f..%2fpath2/app/manifests/v1",
		"/v2/path1%2F%2E%2E%2Fpath2/app/manifests/v1",
		"/v2/path1/..%2fpath2/app/manifests/v1",
		"/v2/path1/%2e%2e%2fpath2/app/manifests/v1",
		"/v2/path1%2f..%2fpath2/app/blobs/" + layer,
		"/v2/%70ath2/app/manifests/v1",
		"/v2/path2%2fapp/manifests/v1",
		// doubled slashes
		"/v2//path2/app/manifests/v1",
		"/v2/path2//app/manifests/v1",
		"/v2/path1//../path2/app/manifests/v1",
		"/v2/path2/app//manifests/v1",
		"/v2/path2/app/blobs//" + layer,
		// case variants
		"/v2/PATH2/app/manifests/v1",
		"/v2/Path2/app/manifests/v1",
		"/v2/path2/APP/manifests/v1",
		"/v2/PATH2/app/blobs/" + layer,
		"/v2/PATH2/app/tags/list",
		// trailing slashes
		"/v2/path2/app/manifests/v1/",
		"/v2/path2/app/blobs/" + layer + "/",
		"/v2/path2/app/tags/list/",
		"/v2/path2/app/",
		// private content by digest under the public repository's name
		"/v2/path1/app/manifests/" + p.digest,
		"/v2/path1/app/blobs/" + layer,
	}
}

// TestPathTricksOnRepositoryNamesAreRefused sends every trick to the origin
// and to the agent, anonymously and as mallory (whom a deny rule keeps out
// of path2/**), with GET and HEAD: each is refused with an OCI error and
// leaks nothing. A redirect (Go's ServeMux answers a path with dot
// segments or doubled slashes with one to the cleaned path) is followed,
// and where it leads must be refused too, as path2 is.
func TestPathTricksOnRepositoryNamesAreRefused(t *testing.T) {
	e := setup(t)
	p := e.private
	servers := []struct {
		name string
		c    client
	}{{"origin", client{addr: e.origin.Addr}}, {"agent", client{addr: e.agent.Addr}}}

	// Controls: the raw client gets content where the rules allow it, so a
	// refusal below is the rules' doing, not the client's.
	for _, s := range servers {
		if a := s.c.do(t, http.MethodGet, "/v2/path1/app/manifests/v1", ""); a.status != http.StatusOK || !bytes.Equal(a.body, e.public.manifest) {
			t.Fatalf("control: anonymous GET of the public manifest from the %s: %v", s.name, a)
		}
		if a := s.c.do(t, http.MethodGet, "/v2/path2/app/manifests/v1", basic("alice")); a.status != http.StatusOK || !bytes.Equal(a.body, p.manifest) {
			t.Fatalf("control: alice's GET of the private manifest from the %s: %v", s.name, a)
		}
	}

	for _, s := range servers {
		for _, user := range []string{"", "mallory"} {
			authz, who := "", "anonymous"
			if user != "" {
				authz, who = basic(user), user
			}
			for _, target := range pathTricks(p) {
				for _, method := range []string{http.MethodGet, http.MethodHead} {
					a := s.c.do(t, method, target, authz)
					t.Logf("%s, %s: %s %s -> %d %s", s.name, who, method, target, a.status, a.ociCode())
					assertNoLeak(t, a, p)
					if a.status >= 300 && a.status < 400 {
						a = followRedirect(t, s.c, a, authz)
						assertNoLeak(t, a, p)
					}
					switch {
					case a.status < 400:
						t.Errorf("%s, %s: %v\nwant a 4xx refusal", s.name, who, a)
					case method == http.MethodGet && a.ociCode() == "":
						t.Errorf("%s, %s: %v\nwant an OCI error body", s.name, who, a)
					case a.status == http.StatusUnauthorized && a.header.Get("WWW-Authenticate") == "":
						t.Errorf("%s, %s: %v\nwant a challenge with the 401", s.name, who, a)
					}
				}
			}
		}
	}
}

// followRedirect requests a redirect's Location once, with the same
// credentials.
func followRedirect(t *testing.T, c client, a answer, authz string) answer {
	t.Helper()
	loc, err := url.Parse(a.header.Get("Location"))
	if err != nil || loc.Host != "" && loc.Host != c.addr {
		t.Fatalf("%v\nredirects to %q, not a path on the same server", a, a.header.Get("Location"))
	}
	target := loc.EscapedPath()
	if !strings.HasPrefix(target, "/") {
		t.Fatalf("%v\nredirects to a relative path %q", a, target)
	}
	if loc.RawQuery != "" {
		target += "?" + loc.RawQuery
	}
	return c.do(t, a.method, target, authz)
}
