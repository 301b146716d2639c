package hostile_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/ociapi/ociapitest"
)

// raw sends target exactly as written: no client cleans or escapes it.
func raw(t *testing.T, addr, method, target string) answer {
	t.Helper()
	resp, body := ociapitest.RawRequest(t, addr, method, target)
	return answer{resp.StatusCode, resp.Header, body}
}

// TestNonCanonicalPathsAreRefusedNeverRedirected: paths that a cleaner, a
// proxy or a storage path could resolve to another repository (here the
// private one, which holds an image) are refused with 400 NAME_INVALID and
// an OCI body, never answered with a redirect to the cleaned path nor with
// content; malformed names, tags and digests are 400 with their codes.
// Honest pulls go on meanwhile.
func TestNonCanonicalPathsAreRefusedNeverRedirected(t *testing.T) {
	o := startOrigin(t, "file://"+t.TempDir(), "")
	c := newClient(t, o)
	c.pushImage("private/app", "v1", randomBytes(t, 64<<10))
	targets := ociapitest.NonCanonicalTargets()
	for _, target := range targets {
		for _, method := range []string{"GET", "HEAD", "PUT", "DELETE"} {
			a := raw(t, o.Addr, method, target)
			if a.status != http.StatusBadRequest || a.header.Get("Location") != "" {
				t.Errorf("%s %s: %d (Location %q), want 400 and no redirect", method, target, a.status, a.header.Get("Location"))
				continue
			}
			if method != "HEAD" && a.ociCode() != "NAME_INVALID" {
				t.Errorf("%s %s: %v, want an OCI NAME_INVALID body", method, target, a)
			}
		}
		c.expect(c.do("GET", "/v2/private/app/manifests/v1", nil), http.StatusOK, "honest pull between attacks")
	}
	for _, bad := range []struct{ target, code string }{
		{"/v2/Private/app/manifests/v1", "NAME_INVALID"},
		{"/v2/private/app/manifests/-v1", "MANIFEST_INVALID"},
		{"/v2/private/app/manifests/sha256:1234", "DIGEST_INVALID"},
		{"/v2/private/app/blobs/sha256:" + strings.Repeat("Z", 64), "DIGEST_INVALID"},
		{"/v2/private/app/blobs/latest", "DIGEST_INVALID"},
		{"/v2/private/app/referrers/nope", "DIGEST_INVALID"},
	} {
		if a := raw(t, o.Addr, "GET", bad.target); a.status != http.StatusBadRequest || a.ociCode() != bad.code {
			t.Errorf("GET %s: %v, want 400 %s", bad.target, a, bad.code)
		}
	}
	want := float64(len(targets) * 4)
	if n := metrics(t, o).Sum("shoal_origin_http_requests_total", "handler", "invalid", "code", "400"); n < want {
		t.Errorf("shoal_origin_http_requests_total{handler=invalid,code=400} = %v, want the %v refusals", n, want)
	}
}
