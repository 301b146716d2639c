package auth_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestCatalogListsOnlyWhatTheCallerMayPull: anyone may ask for the
// catalog, and it names only repositories the caller may pull, on every
// page and in the Link to the next one, at the origin and through the
// agent.
func TestCatalogListsOnlyWhatTheCallerMayPull(t *testing.T) {
	e := setup(t)
	for _, srv := range []client{{addr: e.origin.Addr}, {addr: e.agent.Addr}} {
		// Control: alice sees path2.
		if got := catalog(t, srv, "/v2/_catalog", basic("alice")); !slices.Contains(got, "path2/app") || !slices.Contains(got, "path2/other") {
			t.Fatalf("control: the catalog %s shows alice %v, want path2/app and path2/other in it", srv.addr, got)
		}
		for _, who := range []string{"", "bob", "mallory"} {
			authz := ""
			if who != "" {
				authz = basic(who)
			}
			for _, target := range []string{"/v2/_catalog", "/v2/_catalog?n=1", "/v2/_catalog?n=1000&last=path2", "/v2/_catalog?n=1000&last=path1/app"} {
				a := srv.do(t, http.MethodGet, target, authz)
				if a.status == http.StatusOK {
					got := catalog(t, srv, target, authz)
					if target == "/v2/_catalog" && !slices.Contains(got, "path1/app") {
						t.Errorf("%s as %q: %v\nwant path1/app, which anyone may pull, in it", srv.addr, who, a)
					}
				} else {
					assertRefused(t, a)
				}
				var headers strings.Builder
				for k, vs := range a.header {
					fmt.Fprintf(&headers, "%s: %s\n", k, strings.Join(vs, ", "))
				}
				for _, private := range []string{"path2/app", "path2/other", "path2%2F"} {
					if strings.Contains(string(a.body), private) || strings.Contains(headers.String(), private) {
						t.Errorf("%s as %q: %v\n%swant no %s in it", srv.addr, who, a, headers.String(), private)
					}
				}
			}
		}
	}
}

// catalog returns the repositories of one catalog page.
func catalog(t *testing.T, c client, target, authz string) []string {
	t.Helper()
	a := c.do(t, http.MethodGet, target, authz)
	var body struct {
		Repositories []string `json:"repositories"`
	}
	if a.status != http.StatusOK || json.Unmarshal(a.body, &body) != nil {
		t.Fatalf("catalog: %v", a)
	}
	return body.Repositories
}

// TestTagsAndReferrersOfAPrivateRepositoryAreRefused: who may not pull
// path2/app learns neither its tags nor its referrers, with the same
// answer as for a repository or subject that does not exist.
func TestTagsAndReferrersOfAPrivateRepositoryAreRefused(t *testing.T) {
	e := setup(t)
	p := e.private
	missing := digest.FromString("no such manifest").String()
	cases := []struct {
		name              string
		existing, missing string // request-targets
		replace           []string
		control           func(answer) bool // alice's answer to existing
	}{{
		name:     "tags",
		existing: "/v2/path2/app/tags/list",
		missing:  "/v2/path2/ghost/tags/list",
		replace:  []string{"path2/ghost", "path2/app"},
		control: func(a answer) bool {
			var body struct{ Tags []string }
			return json.Unmarshal(a.body, &body) == nil && slices.Contains(body.Tags, "v1")
		},
	}, {
		name:     "referrers",
		existing: "/v2/path2/app/referrers/" + p.digest,
		missing:  "/v2/path2/app/referrers/" + missing,
		replace:  []string{missing, p.digest},
		control:  func(a answer) bool { return strings.Contains(string(a.body), p.referrer) },
	}, {
		name:     "referrers of a missing repository",
		existing: "/v2/path2/app/referrers/" + p.digest,
		missing:  "/v2/path2/ghost/referrers/" + p.digest,
		replace:  []string{"path2/ghost", "path2/app"},
	}}
	for _, srv := range []struct {
		name string
		c    client
	}{{"origin", client{addr: e.origin.Addr}}, {"agent", client{addr: e.agent.Addr}}} {
		for _, tc := range cases {
			t.Run(srv.name+"/"+tc.name, func(t *testing.T) {
				if tc.control != nil {
					if a := srv.c.do(t, http.MethodGet, tc.existing, basic("alice")); a.status != http.StatusOK || !tc.control(a) {
						t.Fatalf("control: alice's request: %v", a)
					}
				}
				scope := challenge{scope: "repository:path2/app:pull"}
				for _, who := range []string{"", "bob", "mallory"} {
					authz := ""
					if who != "" {
						authz = basic(who)
					}
					a := srv.c.do(t, http.MethodGet, tc.existing, authz)
					if who == "" {
						assertUnauthorized(t, a, srv.c.addr, scope)
					} else {
						assertForbidden(t, a)
					}
					assertNoLeak(t, a, p)
					if strings.Contains(string(a.body), p.referrer) || strings.Contains(string(a.body), `"tags"`) {
						t.Errorf("%v\nthe refusal lists tags or referrers", a)
					}
					assertSameAnswer(t, a, srv.c.do(t, http.MethodGet, tc.missing, authz), tc.replace...)
				}
			})
		}
	}
}
