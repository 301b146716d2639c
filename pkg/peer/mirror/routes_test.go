package mirror

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// TestParseRoute: the mirror's routes (its metrics labels) from the API's
// routes, which internal/ociapi parses and tests: the API root is the
// ping, every upload path one route to refuse, any other /v2/ path one to
// proxy, and the token endpoint its own.
func TestParseRoute(t *testing.T) {
	for _, c := range []struct {
		path string
		want route
	}{
		{"/v2/", route{kind: routePing}},
		{"/v2", route{kind: routePing}},
		{"/v2/_catalog", route{kind: routeCatalog}},
		{"/v2/x/manifests/manifests/v1", route{kind: routeManifest, name: "x/manifests", ref: "v1"}},
		{"/v2/x/blobs/blobs/sha256:abc", route{kind: routeBlob, name: "x/blobs", ref: "sha256:abc"}},
		{"/v2/team/app/tags/list", route{kind: routeTags, name: "team/app"}},
		{"/v2/team/app/referrers/sha256:abc", route{kind: routeReferrers, name: "team/app", ref: "sha256:abc"}},
		{"/v2/team/app/blobs/uploads/", route{kind: routeUpload, name: "team/app"}},
		{"/v2/team/app/blobs/uploads", route{kind: routeUpload, name: "team/app"}},
		{"/v2/team/app/blobs/uploads/123", route{kind: routeUpload, name: "team/app"}},
		{"/v2/team/app/something/else", route{kind: routeOther}},
		// Escapes of other characters are decoded: they cannot move a
		// path component.
		{"/v2/team/app/manifests/sha256%3Aabc", route{kind: routeManifest, name: "team/app", ref: "sha256:abc"}},
		// The token endpoint, proxied to the origin's.
		{"/auth/token", route{kind: routeToken}},
		{"/auth/%74oken", route{kind: routeToken}},
	} {
		got, err := parseRoute(c.path)
		if err != nil || got != c.want {
			t.Errorf("parseRoute(%q) = %+v, %v; want %+v", c.path, got, err, c.want)
		}
	}
}

// TestParseRouteRefusals: what internal/ociapi finds not canonical is a
// 400 NAME_INVALID here too, the token endpoint's path included (its
// canonical-path and reference rules are tested there, and through the
// mirror by TestNonCanonicalPathsAreRefused and TestInvalidReferencesAre400);
// a path that is neither /v2/ nor the token endpoint is a 404.
func TestParseRouteRefusals(t *testing.T) {
	for _, p := range []string{
		"/v2/team/../private/manifests/latest",
		"/v2/team%2fapp/manifests/latest",
		"/v2//team/app/manifests/latest",
		"/auth/token/..",
		"/v2/../auth/token",
		"/auth/%2e%2e/auth/token",
	} {
		rt, err := parseRoute(p)
		if err == nil || err.Status != http.StatusBadRequest || err.Code != ociapi.CodeNameInvalid {
			t.Errorf("parseRoute(%q) = %+v, %v; want 400 %s", p, rt, err, ociapi.CodeNameInvalid)
		}
	}
	for _, p := range []string{"/", "/v3/", "/metrics", "/v2x", "/auth", "/auth/token/", "/auth/tokens", "/auth/token/x"} {
		if _, err := parseRoute(p); err == nil || err.Status != http.StatusNotFound {
			t.Errorf("parseRoute(%q) = %v, want 404", p, err)
		}
	}
}

// serveRaw has m answer method and the request target exactly as given,
// as the server reads it off the wire: no client-side cleaning or
// re-escaping.
func serveRaw(m http.Handler, method, target string) *http.Response {
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	resp := rec.Result()
	resp.Request = &http.Request{Method: method}
	return resp
}

// newRawMirror returns a mirror of origin to call directly.
func newRawMirror(t *testing.T, origin string) *Server {
	t.Helper()
	m, err := New(testConfig(origin), Options{Blobs: &fakeBlobs{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// nonCanonicalTargets are paths that a proxy or the origin would resolve
// to another repository than the one they name, or to the public one.
var nonCanonicalTargets = []string{
	"/v2/public/app/../../private/app/manifests/latest",
	"/v2/public/app/%2e%2e/%2e%2e/private/app/blobs/" + testBlobDigest.String(),
	"/v2/public/app/%2E%2E/x/tags/list",
	"/v2/team%2Fapp/manifests/latest",
	"/v2/team/./app/manifests/latest",
	"/v2//team/app/manifests/latest",
	"/v2/team/app/..%2f..%2f_catalog",
	"/v2/team/app/referrers/%2e%2e",
	"//v2/team/app/manifests/latest",
	"/v2/../metrics",
}

// TestNonCanonicalPathsAreRefused: the mirror answers 400 NAME_INVALID
// with an OCI error body, never a redirect, and never asks the origin.
func TestNonCanonicalPathsAreRefused(t *testing.T) {
	o := newFakeOrigin(t)
	m := newRawMirror(t, o.URL)
	for _, target := range nonCanonicalTargets {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			checkRefusal(t, method+" "+target, serveRaw(m, method, target), http.StatusBadRequest, ociapi.CodeNameInvalid)
		}
	}
	if n := o.requests.Load(); n != 0 {
		t.Errorf("the origin was asked %d times for paths that are not canonical, want 0", n)
	}
}

// TestInvalidReferencesAre400: malformed names, tags and digests are 400
// with the spec's code, not a 404 or a question to the origin.
func TestInvalidReferencesAre400(t *testing.T) {
	o := newFakeOrigin(t)
	m := newRawMirror(t, o.URL)
	for _, c := range []struct{ target, code string }{
		{"/v2/Team/App/manifests/latest", ociapi.CodeNameInvalid},
		{"/v2/team/app/manifests/-bad", ociapi.CodeManifestInvalid},
		{"/v2/team/app/manifests/", ociapi.CodeManifestInvalid},
		{"/v2/team/app/manifests/sha256:nothex", ociapi.CodeDigestInvalid},
		{"/v2/team/app/blobs/sha256:nothex", ociapi.CodeDigestInvalid},
		{"/v2/team/app/blobs/latest", ociapi.CodeDigestInvalid},
		{"/v2/team/app/referrers/latest", ociapi.CodeDigestInvalid},
		{"/v2/-team/tags/list", ociapi.CodeNameInvalid},
	} {
		checkRefusal(t, "GET "+c.target, serveRaw(m, http.MethodGet, c.target), http.StatusBadRequest, c.code)
	}
	if n := o.requests.Load(); n != 0 {
		t.Errorf("the origin was asked %d times for invalid references, want 0", n)
	}
}

// checkRefusal asserts an error answer: status, no redirect, and for GET
// an OCI error body with code.
func checkRefusal(t *testing.T, what string, resp *http.Response, status int, code string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	if loc := resp.Header.Get("Location"); loc != "" || (resp.StatusCode >= 300 && resp.StatusCode < 400) {
		t.Errorf("%s: redirected (%d) to %q, want %d", what, resp.StatusCode, loc, status)
		return
	}
	if resp.StatusCode != status {
		t.Errorf("%s: status %d, want %d (body %s)", what, resp.StatusCode, status, body)
		return
	}
	if resp.Request.Method == http.MethodHead {
		return
	}
	var eb ociapi.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) != 1 {
		t.Errorf("%s: not an OCI error body: %q", what, body)
		return
	}
	if eb.Errors[0].Code != code || eb.Errors[0].Message == "" {
		t.Errorf("%s: code %s (%q), want %s", what, eb.Errors[0].Code, eb.Errors[0].Message, code)
	}
}
