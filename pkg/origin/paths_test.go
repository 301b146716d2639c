package origin

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/internal/ociapi/ociapitest"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// TestNonCanonicalPathsAre400NeverARedirect: every non-canonical path is
// answered 400 NAME_INVALID with an OCI body, by every method, whether or
// not access control is on (and before it), never with a 301 to the
// cleaned path.
func TestNonCanonicalPathsAre400NeverARedirect(t *testing.T) {
	d := inmemory.New()
	_, open := newServerOn(t, d)
	open.pushBlob("b", []byte("content"))
	authTS, _ := newAuthOrigin(t, d, newTestAuthorizer(t))
	for _, base := range []string{open.base, authTS.URL} {
		addr := strings.TrimPrefix(base, "http://")
		for _, target := range ociapitest.NonCanonicalTargets() {
			for _, method := range []string{"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"} {
				resp, body := ociapitest.RawRequest(t, addr, method, target)
				if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
					t.Errorf("%s %s: %d (Location %q), want 400 and no redirect", method, target, resp.StatusCode, resp.Header.Get("Location"))
					continue
				}
				if method == "HEAD" {
					continue
				}
				if !strings.HasPrefix(string(body), "{") {
					t.Errorf("%s %s: body %q", method, target, body)
					continue
				}
				if code := errorCode(t, body); code != ociapi.CodeNameInvalid {
					t.Errorf("%s %s: code %s, want %s", method, target, code, ociapi.CodeNameInvalid)
				}
			}
		}
	}
	// The canonical endpoints beside the API still answer.
	addr := strings.TrimPrefix(open.base, "http://")
	for _, p := range []string{"/healthz", "/readyz", "/v2/", "/v2", "/v2/b/tags/list"} {
		if resp, body := ociapitest.RawRequest(t, addr, "GET", p); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d %s, want 200", p, resp.StatusCode, body)
		}
	}
}

// TestInvalidReferencesAre400WithTheirCode: a malformed name, tag or digest
// is a 400 with the spec's code on every route that takes one, not a 404
// that reads as "not pushed yet".
func TestInvalidReferencesAre400WithTheirCode(t *testing.T) {
	_, e := newServerOn(t, inmemory.New())
	sha384 := "sha384:" + strings.Repeat("a", 96)
	cases := []struct {
		method, path, code string
	}{
		{"GET", "/v2/Upper/manifests/latest", ociapi.CodeNameInvalid},
		{"GET", "/v2/Upper/app/manifests/latest", ociapi.CodeNameInvalid},
		{"GET", "/v2/host:5000/app/manifests/latest", ociapi.CodeNameInvalid},
		{"GET", "/v2/a_/tags/list", ociapi.CodeNameInvalid},
		{"GET", "/v2/" + strings.Repeat("a", 256) + "/manifests/latest", ociapi.CodeNameInvalid},
		{"POST", "/v2/a-/blobs/uploads/", ociapi.CodeNameInvalid},
		{"GET", "/v2/a/manifests/-tag", ociapi.CodeManifestInvalid},
		{"GET", "/v2/a/manifests/" + strings.Repeat("t", 129), ociapi.CodeManifestInvalid},
		{"HEAD", "/v2/a/manifests/.tag", ociapi.CodeManifestInvalid},
		{"DELETE", "/v2/a/manifests/.tag", ociapi.CodeManifestInvalid},
		{"PUT", "/v2/a/manifests/ta%21g", ociapi.CodeManifestInvalid},
		{"GET", "/v2/a/manifests/sha256:abc", ociapi.CodeDigestInvalid},
		{"GET", "/v2/a/manifests/sha256:" + strings.Repeat("A", 64), ociapi.CodeDigestInvalid},
		{"GET", "/v2/a/manifests/" + sha384, ociapi.CodeDigestInvalid},
		{"DELETE", "/v2/a/manifests/md5:00", ociapi.CodeDigestInvalid},
		{"GET", "/v2/a/blobs/latest", ociapi.CodeDigestInvalid},
		{"HEAD", "/v2/a/blobs/sha256:zz", ociapi.CodeDigestInvalid},
		{"DELETE", "/v2/a/blobs/sha256:", ociapi.CodeDigestInvalid},
		{"GET", "/v2/a/referrers/notadigest", ociapi.CodeDigestInvalid},
	}
	for _, c := range cases {
		resp := e.do(c.method, c.path, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s %s: %d, want 400 %s", c.method, c.path, resp.StatusCode, c.code)
			continue
		}
		if c.method == "HEAD" {
			continue
		}
		var eb ociapi.ErrorBody
		if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) != 1 || eb.Errors[0].Code != c.code {
			t.Errorf("%s %s: body %s, want one %s error", c.method, c.path, body, c.code)
		}
	}
	// Well-formed references to nothing are still 404.
	e.expect(e.do("GET", "/v2/a/manifests/latest", nil), http.StatusNotFound)
	e.expect(e.do("GET", "/v2/a/blobs/sha256:"+strings.Repeat("0", 64), nil), http.StatusNotFound)
}
