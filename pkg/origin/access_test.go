package origin

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// The users of the access tests, all with password "<name>-password".
// alice builds (group builders: everything everywhere); bob only has an
// account (pull of path2); carol pushes to carol/**.
var testUsers = []string{"alice", "bob", "carol"}

// testRules is the mission's example: path1 public, path2 for any
// authenticated user, carol's own namespace, builders everywhere.
func testRules() []auth.Rule {
	return []auth.Rule{
		{Repositories: []string{"path1/**"}, Subjects: []string{"anonymous"}, Actions: []auth.Action{auth.Pull}},
		{Repositories: []string{"path2/**"}, Subjects: []string{"authenticated"}, Actions: []auth.Action{auth.Pull}},
		{Repositories: []string{"carol/**"}, Subjects: []string{"user:carol"}, Actions: []auth.Action{auth.Pull, auth.Push}},
		{Repositories: []string{"**"}, Subjects: []string{"group:builders"}, Actions: []auth.Action{auth.Pull, auth.Push, auth.Delete}},
	}
}

// newTestAuthorizer returns an authorizer over testUsers and testRules.
func newTestAuthorizer(t testing.TB) *auth.Authorizer {
	t.Helper()
	var htpasswd bytes.Buffer
	for _, u := range testUsers {
		// MinCost: a test checks many passwords; the cost is not what is tested.
		h, err := bcrypt.GenerateFromPassword([]byte(u+"-password"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		// The prefix `htpasswd -B` writes.
		fmt.Fprintf(&htpasswd, "%s:$2y$%s\n", u, h[4:])
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, htpasswd.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := auth.DefaultConfig()
	cfg.Htpasswd = path
	cfg.Groups = map[string][]string{"builders": {"alice"}}
	cfg.Rules = testRules()
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(cfg, auth.Options{Key: key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// newAuthOrigin serves an origin with access control over d, and returns
// it with the server (for its metrics).
func newAuthOrigin(t testing.TB, d storage.Driver, a *auth.Authorizer) (*httptest.Server, *Server) {
	t.Helper()
	s, err := New(d, DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetAuthorizer(a)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts, s
}

// openOrigin serves an origin without access control over d: the tests
// seed and inspect storage through it, as another origin node would.
func openOrigin(t testing.TB, d storage.Driver) exchange {
	t.Helper()
	s, err := New(d, DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return exchange{t, ts.URL}
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// fetchToken asks the origin's token endpoint for scope, with an
// Authorization header (none when empty), as a Docker client does.
func fetchToken(t testing.TB, base, authorization, scope string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+auth.TokenPath+"?service=shoal&scope="+scope, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token endpoint answered %d to scope %s: %s", resp.StatusCode, scope, body)
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || (tr.Token == "" && tr.AccessToken == "") {
		t.Fatalf("token endpoint answer %s has no token (%v)", body, err)
	}
	if tr.Token != "" {
		return tr.Token
	}
	return tr.AccessToken
}

// seeded is what seedRepo put in a repository.
type seeded struct {
	manifest []byte
	digest   digest.Digest // of the manifest, tagged "latest"
	layer    digest.Digest
	upload   string // Location of an open upload session
}

func seedRepo(e exchange, name string) seeded {
	e.t.Helper()
	cfg := e.pushBlob(name, []byte("{}"))
	layer := e.pushBlob(name, []byte("layer of "+name))
	m := imageManifest(cfg, layer, len("layer of "+name))
	e.expect(e.do("PUT", "/v2/"+name+"/manifests/latest", m, "Content-Type", mediaTypeOCIManifest), http.StatusCreated)
	resp := e.do("POST", "/v2/"+name+"/blobs/uploads/", nil)
	e.expect(resp, http.StatusAccepted)
	return seeded{manifest: m, digest: digest.FromBytes(m), layer: layer, upload: resp.Header.Get("Location")}
}

// apiCase is one route and method of the registry API, with what it needs
// and what it answers when allowed.
type apiCase struct {
	name   string
	method string
	path   func(repo string, s seeded) string
	body   func(repo string, s seeded) []byte
	hdr    []string
	action auth.Action
	scope  string // the actions a challenge asks for
	ok     int
}

var chunk = []byte("a chunk")

func apiCases() []apiCase {
	manifest := func(repo string, s seeded) string { return "/v2/" + repo + "/manifests/latest" }
	byDigest := func(repo string, s seeded) string { return "/v2/" + repo + "/manifests/" + s.digest.String() }
	blob := func(repo string, s seeded) string { return "/v2/" + repo + "/blobs/" + s.layer.String() }
	upload := func(repo string, s seeded) string { return s.upload }
	uploads := func(repo string, s seeded) string { return "/v2/" + repo + "/blobs/uploads/" }
	const pull, push, del = "pull", "pull,push", "delete"
	return []apiCase{
		{name: "GET manifest", method: "GET", path: manifest, action: auth.Pull, scope: pull, ok: 200},
		{name: "HEAD manifest", method: "HEAD", path: manifest, action: auth.Pull, scope: pull, ok: 200},
		{name: "GET manifest by digest", method: "GET", path: byDigest, action: auth.Pull, scope: pull, ok: 200},
		{name: "GET missing manifest", method: "GET", path: func(repo string, s seeded) string { return "/v2/" + repo + "/manifests/missing" },
			action: auth.Pull, scope: pull, ok: 404},
		{name: "PUT manifest", method: "PUT", path: func(repo string, s seeded) string { return "/v2/" + repo + "/manifests/v2" },
			body: func(repo string, s seeded) []byte { return s.manifest }, hdr: []string{"Content-Type", mediaTypeOCIManifest},
			action: auth.Push, scope: push, ok: 201},
		{name: "DELETE manifest", method: "DELETE", path: byDigest, action: auth.Delete, scope: del, ok: 202},
		{name: "GET blob", method: "GET", path: blob, action: auth.Pull, scope: pull, ok: 200},
		{name: "HEAD blob", method: "HEAD", path: blob, action: auth.Pull, scope: pull, ok: 200},
		{name: "DELETE blob", method: "DELETE", path: blob, action: auth.Delete, scope: del, ok: 202},
		{name: "GET tags", method: "GET", path: func(repo string, s seeded) string { return "/v2/" + repo + "/tags/list" },
			action: auth.Pull, scope: pull, ok: 200},
		{name: "GET referrers", method: "GET", path: func(repo string, s seeded) string { return "/v2/" + repo + "/referrers/" + s.digest.String() },
			action: auth.Pull, scope: pull, ok: 200},
		{name: "POST upload", method: "POST", path: uploads, action: auth.Push, scope: push, ok: 202},
		{name: "POST monolithic upload", method: "POST",
			path: func(repo string, s seeded) string {
				return "/v2/" + repo + "/blobs/uploads/?digest=" + digest.FromBytes(chunk).String()
			},
			body: func(string, seeded) []byte { return chunk }, action: auth.Push, scope: push, ok: 201},
		{name: "GET upload", method: "GET", path: upload, action: auth.Push, scope: push, ok: 204},
		{name: "PATCH upload", method: "PATCH", path: upload, body: func(string, seeded) []byte { return chunk },
			action: auth.Push, scope: push, ok: 202},
		{name: "PUT upload", method: "PUT",
			path: func(repo string, s seeded) string { return s.upload + "?digest=" + digest.FromBytes(chunk).String() },
			body: func(string, seeded) []byte { return chunk }, action: auth.Push, scope: push, ok: 201},
		{name: "DELETE upload", method: "DELETE", path: upload, action: auth.Push, scope: push, ok: 204},
		{name: "POST to a manifest", method: "POST", path: manifest, action: auth.Pull, scope: pull, ok: 405},
	}
}

// verdict is what the test rules decide for a subject of TestEveryRoute.
type verdict struct {
	allowed      bool
	status       int
	code         string
	insufficient bool
}

func TestEveryRouteMethodAndSubject(t *testing.T) {
	a := newTestAuthorizer(t)
	// A token for bob granting pull on path2/app, fetched once.
	d := inmemory.New()
	ts, _ := newAuthOrigin(t, d, a)
	bobToken := fetchToken(t, ts.URL, basic("bob", "bob-password"), "repository:path2/app:pull")

	subjects := []struct {
		name          string
		authorization string
		decide        func(repo string, action auth.Action) verdict
	}{
		{"anonymous", "", func(repo string, action auth.Action) verdict {
			if repo == "path1/app" && action == auth.Pull {
				return verdict{allowed: true}
			}
			return verdict{status: 401, code: ociapi.CodeUnauthorized}
		}},
		{"alice, a builder", basic("alice", "alice-password"), func(string, auth.Action) verdict {
			return verdict{allowed: true}
		}},
		{"bob, authenticated", basic("bob", "bob-password"), func(repo string, action auth.Action) verdict {
			if action == auth.Pull {
				return verdict{allowed: true}
			}
			return verdict{status: 403, code: ociapi.CodeDenied}
		}},
		{"alice with a wrong password", basic("alice", "nope"), func(string, auth.Action) verdict {
			return verdict{status: 401, code: ociapi.CodeUnauthorized}
		}},
		{"an unknown user", basic("mallory", "mallory-password"), func(string, auth.Action) verdict {
			return verdict{status: 401, code: ociapi.CodeUnauthorized}
		}},
		{"bob's token for path2/app pull", "Bearer " + bobToken, func(repo string, action auth.Action) verdict {
			if repo == "path2/app" && action == auth.Pull {
				return verdict{allowed: true}
			}
			return verdict{status: 401, code: ociapi.CodeUnauthorized, insufficient: true}
		}},
		{"a forged token", "Bearer " + bobToken[:len(bobToken)-4] + "AAAA", func(string, auth.Action) verdict {
			return verdict{status: 401, code: ociapi.CodeUnauthorized}
		}},
	}
	for _, repo := range []string{"path1/app", "path2/app"} {
		for _, c := range apiCases() {
			for _, sub := range subjects {
				t.Run(repo+"/"+c.name+"/"+sub.name, func(t *testing.T) {
					d := inmemory.New()
					open := openOrigin(t, d)
					s := seedRepo(open, repo)
					ts, srv := newAuthOrigin(t, d, a)
					e := exchange{t, ts.URL}
					var body []byte
					if c.body != nil {
						body = c.body(repo, s)
					}
					hdr := c.hdr
					if sub.authorization != "" {
						hdr = append(slices.Clone(hdr), "Authorization", sub.authorization)
					}
					resp := e.do(c.method, c.path(repo, s), body, hdr...)
					want := sub.decide(repo, c.action)
					if want.allowed {
						e.expect(resp, c.ok)
						return
					}
					b := e.expect(resp, want.status)
					if c.method != "HEAD" {
						if code := errorCode(t, b); code != want.code {
							t.Errorf("error code %s, want %s", code, want.code)
						}
					}
					challenge := resp.Header.Get("WWW-Authenticate")
					if want.status == 401 {
						wantChallenge := fmt.Sprintf(`Bearer realm="%s/auth/token",service="shoal",scope="repository:%s:%s"`, ts.URL, repo, c.scope)
						if want.insufficient {
							wantChallenge += `,error="insufficient_scope"`
						}
						if challenge != wantChallenge {
							t.Errorf("WWW-Authenticate\n got  %s\n want %s", challenge, wantChallenge)
						}
					} else if challenge != "" {
						t.Errorf("403 with a challenge %q: a logged-in user cannot do better by logging in", challenge)
					}
					reason := "forbidden"
					switch {
					case want.insufficient:
						reason = "insufficient_scope"
					case sub.authorization == "":
						reason = "anonymous"
					case want.status == 401:
						reason = "bad_credentials"
					}
					if n := testutil.ToFloat64(srv.metrics.authDenied.WithLabelValues(string(c.action), reason)); n != 1 {
						t.Errorf("shoal_origin_auth_denied_total{action=%q,reason=%q} = %v, want 1", c.action, reason, n)
					}
					// Nothing changed: the denied request never reached its handler.
					open.expect(open.do("GET", "/v2/"+repo+"/manifests/latest", nil), 200)
					open.expect(open.do("GET", "/v2/"+repo+"/blobs/"+s.layer.String(), nil), 200)
					open.expect(open.do("GET", s.upload, nil), 204)
					open.expect(open.do("GET", "/v2/"+repo+"/manifests/v2", nil), 404)
				})
			}
		}
	}
}

// TestDenialSaysNothingAboutExistence: to someone who may not pull, a
// private repository's manifests, tags, blobs and referrers that exist
// look exactly like those that do not, and like a repository that does
// not exist.
func TestDenialSaysNothingAboutExistence(t *testing.T) {
	a := newTestAuthorizer(t)
	d := inmemory.New()
	s := seedRepo(openOrigin(t, d), "path2/app")
	ts, _ := newAuthOrigin(t, d, a)
	e := exchange{t, ts.URL}
	missing := digest.FromString("never pushed")
	pairs := [][2]string{
		{"/v2/path2/app/manifests/latest", "/v2/path2/app/manifests/nope"},
		{"/v2/path2/app/manifests/" + s.digest.String(), "/v2/path2/app/manifests/" + missing.String()},
		{"/v2/path2/app/blobs/" + s.layer.String(), "/v2/path2/app/blobs/" + missing.String()},
		{"/v2/path2/app/referrers/" + s.digest.String(), "/v2/path2/app/referrers/" + missing.String()},
		{s.upload, "/v2/path2/app/blobs/uploads/" + "0f0e0d0c-0000-4000-8000-000000000000"},
		{"/v2/path2/app/tags/list", "/v2/path2/none/tags/list"},
	}
	answer := func(path string) string {
		resp := e.do("GET", path, nil)
		b, _ := io.ReadAll(resp.Body)
		// The repository's name is in the scope and the message, as asked.
		text := strings.ReplaceAll(string(b), "path2/none", "path2/app")
		ch := strings.ReplaceAll(resp.Header.Get("WWW-Authenticate"), "path2/none", "path2/app")
		return fmt.Sprintf("%d %s %s", resp.StatusCode, ch, text)
	}
	for _, p := range pairs {
		existing, absent := answer(p[0]), answer(p[1])
		if existing != absent {
			t.Errorf("anonymous GET tells existing from absent:\n %s: %s\n %s: %s", p[0], existing, p[1], absent)
		}
		if !strings.HasPrefix(existing, "401 ") {
			t.Errorf("anonymous GET %s: %s, want 401", p[0], existing)
		}
	}
}

func TestBaseRouteChallengesAnonymousClients(t *testing.T) {
	a := newTestAuthorizer(t)
	ts, _ := newAuthOrigin(t, inmemory.New(), a)
	e := exchange{t, ts.URL}
	resp := e.do("GET", "/v2/", nil)
	if code := errorCode(t, e.expect(resp, 401)); code != ociapi.CodeUnauthorized {
		t.Errorf("anonymous /v2/: code %s, want %s", code, ociapi.CodeUnauthorized)
	}
	if got, want := resp.Header.Get("WWW-Authenticate"), fmt.Sprintf(`Bearer realm="%s/auth/token",service="shoal"`, ts.URL); got != want {
		t.Errorf("anonymous /v2/ challenge\n got  %s\n want %s (no scope: the client only learns the realm)", got, want)
	}
	e.expect(e.do("GET", "/v2/", nil, "Authorization", basic("bob", "bob-password")), 200)
	e.expect(e.do("GET", "/v2/", nil, "Authorization", basic("bob", "wrong")), 401)
	// docker login: a token for no scope, then /v2/ with it.
	tok := fetchToken(t, ts.URL, basic("bob", "bob-password"), "")
	e.expect(e.do("GET", "/v2/", nil, "Authorization", "Bearer "+tok), 200)
}

func TestTokenEndpointMountedOnlyWithAccessControl(t *testing.T) {
	open := openOrigin(t, inmemory.New())
	open.expect(open.do("GET", auth.TokenPath, nil), http.StatusNotFound)

	a := newTestAuthorizer(t)
	ts, _ := newAuthOrigin(t, inmemory.New(), a)
	e := exchange{t, ts.URL}
	// Anonymous clients get tokens too, granting what anonymous may do.
	tok := fetchToken(t, ts.URL, "", "repository:path1/app:pull,push")
	e.expect(e.do("GET", "/v2/path1/app/tags/list", nil, "Authorization", "Bearer "+tok), http.StatusNotFound)
	resp := e.do("POST", "/v2/path1/app/blobs/uploads/", nil, "Authorization", "Bearer "+tok)
	e.expect(resp, http.StatusUnauthorized)
	if !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Errorf("push with a pull-only token: challenge %q lacks insufficient_scope", resp.Header.Get("WWW-Authenticate"))
	}
	// alice's token carries exactly the scope asked for.
	tok = fetchToken(t, ts.URL, basic("alice", "alice-password"), "repository:team/app:pull,push")
	e.expect(e.do("POST", "/v2/team/app/blobs/uploads/", nil, "Authorization", "Bearer "+tok), http.StatusAccepted)
	e.expect(e.do("POST", "/v2/team/other/blobs/uploads/", nil, "Authorization", "Bearer "+tok), http.StatusUnauthorized)
	e.expect(e.do("DELETE", "/v2/team/app/manifests/latest", nil, "Authorization", "Bearer "+tok), http.StatusUnauthorized)
}

func TestCatalogListsOnlyPullableRepositoriesPageByPage(t *testing.T) {
	d := inmemory.New()
	open := openOrigin(t, d)
	all := []string{"carol/z", "path1/a", "path1/b", "path1/c", "path2/x", "priv/y"}
	for _, r := range all {
		open.pushBlob(r, []byte(r))
	}
	a := newTestAuthorizer(t)
	ts, _ := newAuthOrigin(t, d, a)
	e := exchange{t, ts.URL}

	// pages lists the catalog n at a time, following Link headers.
	pages := func(authorization string, n int) [][]string {
		t.Helper()
		var out [][]string
		next := fmt.Sprintf("/v2/_catalog?n=%d", n)
		for next != "" && len(out) < 10 {
			var hdr []string
			if authorization != "" {
				hdr = []string{"Authorization", authorization}
			}
			resp := e.do("GET", next, nil, hdr...)
			var cat struct {
				Repositories []string `json:"repositories"`
			}
			if err := json.Unmarshal(e.expect(resp, 200), &cat); err != nil {
				t.Fatal(err)
			}
			out = append(out, cat.Repositories)
			next = ""
			if l := resp.Header.Get("Link"); l != "" {
				next = strings.TrimSuffix(strings.TrimPrefix(l, "<"), `>; rel="next"`)
			}
		}
		return out
	}
	type catalogCase struct {
		who           string
		authorization string
		want          [][]string
	}
	cases := []catalogCase{
		{"anonymous", "", [][]string{{"path1/a", "path1/b"}, {"path1/c"}}},
		{"bob", basic("bob", "bob-password"), [][]string{{"path1/a", "path1/b"}, {"path1/c", "path2/x"}}},
		{"carol", basic("carol", "carol-password"), [][]string{{"carol/z", "path1/a"}, {"path1/b", "path1/c"}, {"path2/x"}}},
		{"alice", basic("alice", "alice-password"), [][]string{{"carol/z", "path1/a"}, {"path1/b", "path1/c"}, {"path2/x", "priv/y"}}},
	}
	// Docker clients list with a token for registry:catalog:*, which lists
	// by its user's rules; a token for repositories lists only those.
	cases = append(cases,
		catalogCase{"bob's catalog token", "Bearer " + fetchToken(t, ts.URL, basic("bob", "bob-password"), "registry:catalog:*"),
			[][]string{{"path1/a", "path1/b"}, {"path1/c", "path2/x"}}},
		catalogCase{"bob's token for path2/x", "Bearer " + fetchToken(t, ts.URL, basic("bob", "bob-password"), "repository:path2/x:pull"),
			[][]string{{"path2/x"}}})
	for _, c := range cases {
		if got := pages(c.authorization, 2); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("catalog for %s, 2 a page: %v, want %v", c.who, got, c.want)
		}
	}
	// A full page followed only by hidden repositories is the last one.
	if got := pages(basic("carol", "carol-password"), 5); fmt.Sprint(got) != "[[carol/z path1/a path1/b path1/c path2/x]]" {
		t.Errorf("carol's catalog, 5 a page: %v, want one page without a Link: priv/y after it is hidden", got)
	}
	e.expect(e.do("GET", "/v2/_catalog", nil, "Authorization", basic("bob", "wrong")), 401)
}

func TestMountNeedsPullOnTheSource(t *testing.T) {
	d := inmemory.New()
	open := openOrigin(t, d)
	secret := open.pushBlob("priv/src", []byte("private layer"))
	public := open.pushBlob("path1/pub", []byte("public layer"))
	missing := digest.FromString("never pushed")
	a := newTestAuthorizer(t)
	ts, _ := newAuthOrigin(t, d, a)
	e := exchange{t, ts.URL}
	carol := []string{"Authorization", basic("carol", "carol-password")}

	// mount answers a mount request as carol: status, and the headers
	// that could tell anything, upload ids aside.
	mount := func(query string) (int, string) {
		resp := e.do("POST", "/v2/carol/app/blobs/uploads/?"+query, nil, carol...)
		e.expect(resp, resp.StatusCode)
		h := resp.Header
		loc := h.Get("Location")
		if id := h.Get("Docker-Upload-UUID"); id != "" {
			loc = strings.ReplaceAll(loc, id, "<id>")
		}
		return resp.StatusCode, fmt.Sprintf("Location=%s Range=%s Length=%s", loc, h.Get("Range"), h.Get("Content-Length"))
	}
	statusSecret, hdrSecret := mount("mount=" + secret.String() + "&from=priv/src")
	statusMissing, hdrMissing := mount("mount=" + missing.String() + "&from=priv/src")
	if statusSecret != http.StatusAccepted {
		t.Errorf("mount out of a repository carol cannot pull: %d, want 202 (an ordinary upload)", statusSecret)
	}
	if statusSecret != statusMissing || hdrSecret != hdrMissing {
		t.Errorf("a mount tells an existing private blob from a missing one:\n existing: %d %s\n missing:  %d %s",
			statusSecret, hdrSecret, statusMissing, hdrMissing)
	}
	e.expect(e.do("HEAD", "/v2/carol/app/blobs/"+secret.String(), nil, carol...), http.StatusNotFound)

	// Anonymous mounts (no from) would link from anywhere: refused.
	if st, _ := mount("mount=" + public.String()); st != http.StatusAccepted {
		t.Errorf("anonymous mount with access control on: %d, want 202 (an ordinary upload)", st)
	}
	e.expect(e.do("HEAD", "/v2/carol/app/blobs/"+public.String(), nil, carol...), http.StatusNotFound)

	// From a repository carol may pull, the mount happens.
	if st, _ := mount("mount=" + public.String() + "&from=path1/pub"); st != http.StatusCreated {
		t.Errorf("mount out of a public repository: %d, want 201", st)
	}
	e.expect(e.do("HEAD", "/v2/carol/app/blobs/"+public.String(), nil, carol...), http.StatusOK)
	// And alice, who may pull priv/src, mounts from it.
	e.expect(e.do("POST", "/v2/team/app/blobs/uploads/?mount="+secret.String()+"&from=priv/src", nil,
		"Authorization", basic("alice", "alice-password")), http.StatusCreated)
}
