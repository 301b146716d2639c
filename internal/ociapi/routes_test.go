package ociapi

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/ociapi/ociapitest"
)

func TestParseRoute(t *testing.T) {
	for _, c := range []struct {
		path string
		want Route
	}{
		{"/v2/", Route{Kind: Base}},
		{"/v2", Route{Kind: Base}},
		{"/v2/_catalog", Route{Kind: Catalog}},
		{"/v2/library/ubuntu/manifests/22.04", Route{Kind: Manifest, Name: "library/ubuntu", Ref: "22.04"}},
		{"/v2/a/b/c/manifests/sha256:abc", Route{Kind: Manifest, Name: "a/b/c", Ref: "sha256:abc"}},
		{"/v2/a/blobs/uploads/", Route{Kind: Uploads, Name: "a"}},
		{"/v2/a/blobs/uploads", Route{Kind: Uploads, Name: "a"}},
		{"/v2/a/b/blobs/uploads/1234", Route{Kind: Upload, Name: "a/b", Ref: "1234"}},
		{"/v2/a/blobs/sha256:abc", Route{Kind: Blob, Name: "a", Ref: "sha256:abc"}},
		// A repository may itself be called "manifests", "blobs" or "tags".
		{"/v2/blobs/blobs/sha256:abc", Route{Kind: Blob, Name: "blobs", Ref: "sha256:abc"}},
		{"/v2/x/manifests/manifests/v1", Route{Kind: Manifest, Name: "x/manifests", Ref: "v1"}},
		{"/v2/x/manifests/tags/list", Route{Kind: Tags, Name: "x/manifests"}},
		{"/v2/team/blobs/manifests/v1", Route{Kind: Manifest, Name: "team/blobs", Ref: "v1"}},
		{"/v2/team/app/tags/list", Route{Kind: Tags, Name: "team/app"}},
		{"/v2/a/referrers/sha256:abc", Route{Kind: Referrers, Name: "a", Ref: "sha256:abc"}},
		{"/v2/blobs/blobs/uploads/", Route{Kind: Uploads, Name: "blobs"}},
	} {
		got, ok := ParseRoute(c.path)
		if !ok || got != c.want {
			t.Errorf("ParseRoute(%q) = %+v, %v; want %+v", c.path, got, ok, c.want)
		}
	}
	for _, p := range []string{"/", "/v1/x", "/v2x", "/v3/", "/v2/team/app/something/else", "/v2/a/tags", "/metrics"} {
		if rt, ok := ParseRoute(p); ok {
			t.Errorf("ParseRoute(%q) = %+v, want no route", p, rt)
		}
	}
}

func TestCanonicalPathRefusesWhatCouldNameAnotherRepository(t *testing.T) {
	// Beside the targets every server's test sends, those that net/http
	// refuses itself before any handler sees them.
	for _, p := range append(ociapitest.NonCanonicalTargets(),
		"/v2/team/app/manifests/%",
		"/v2/team/app/manifests/%zz",
		"/v2/team/app/manifests/latest\x00",
	) {
		got, err := CanonicalPath(p)
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != CodeNameInvalid {
			t.Errorf("CanonicalPath(%q) = %q, %v; want 400 %s", p, got, err, CodeNameInvalid)
			continue
		}
		if !strings.Contains(e.Message, "is not canonical") {
			t.Errorf("CanonicalPath(%q): message %q does not say the path is not canonical", p, e.Message)
		}
	}
	for escaped, want := range map[string]string{
		"/v2/":                                  "/v2/",
		"/v2/team/app/manifests/latest":         "/v2/team/app/manifests/latest",
		"/v2/team/app/manifests/sha256%3Aabc":   "/v2/team/app/manifests/sha256:abc",
		"/v2/a%41/tags/list":                    "/v2/aA/tags/list",
		"/v2/team/app/blobs/uploads/":           "/v2/team/app/blobs/uploads/",
		"/v2/team/app.v2/manifests/1.0":         "/v2/team/app.v2/manifests/1.0",
		"/v2/team/app/manifests/..hidden-tag..": "/v2/team/app/manifests/..hidden-tag..",
	} {
		if got, err := CanonicalPath(escaped); err != nil || got != want {
			t.Errorf("CanonicalPath(%q) = %q, %v; want %q", escaped, got, err, want)
		}
	}
}

func TestRouteValidate(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	for _, c := range []struct {
		path, code string
	}{
		{"/v2/", ""},
		{"/v2/_catalog", ""},
		{"/v2/team/app/manifests/latest", ""},
		{"/v2/team/app/manifests/" + d, ""},
		{"/v2/team/app/manifests/sha512:" + strings.Repeat("b", 128), ""},
		{"/v2/team/app/blobs/" + d, ""},
		{"/v2/team/app/referrers/" + d, ""},
		{"/v2/team/app/tags/list", ""},
		{"/v2/team/app/blobs/uploads/", ""},
		{"/v2/team/app/blobs/uploads/any-id-shape:at.all", ""},
		{"/v2/Team/app/manifests/latest", CodeNameInvalid},
		{"/v2/host:5000/app/manifests/latest", CodeNameInvalid},
		{"/v2/team/-app/tags/list", CodeNameInvalid},
		{"/v2/a_/tags/list", CodeNameInvalid},
		{"/v2/a-/blobs/uploads/", CodeNameInvalid},
		{"/v2/" + strings.Repeat("a", 256) + "/manifests/latest", CodeNameInvalid},
		{"/v2/team/app/manifests/.hidden", CodeManifestInvalid},
		{"/v2/team/app/manifests/-tag", CodeManifestInvalid},
		{"/v2/team/app/manifests/ta!g", CodeManifestInvalid},
		{"/v2/team/app/manifests/" + strings.Repeat("t", 129), CodeManifestInvalid},
		{"/v2/team/app/manifests/", CodeManifestInvalid},
		{"/v2/team/app/manifests/sha256:xyz", CodeDigestInvalid},
		{"/v2/team/app/manifests/sha256:" + strings.Repeat("A", 64), CodeDigestInvalid},
		{"/v2/team/app/manifests/sha384:" + strings.Repeat("a", 96), CodeDigestInvalid},
		{"/v2/team/app/manifests/md5:00", CodeDigestInvalid},
		{"/v2/team/app/blobs/latest", CodeDigestInvalid},
		{"/v2/team/app/blobs/sha256:", CodeDigestInvalid},
		{"/v2/team/app/referrers/latest", CodeDigestInvalid},
	} {
		rt, ok := ParseRoute(c.path)
		if !ok {
			t.Errorf("ParseRoute(%q): no route", c.path)
			continue
		}
		err := rt.Validate()
		var e *Error
		switch {
		case c.code == "" && err != nil:
			t.Errorf("%q refused: %v", c.path, err)
		case c.code != "" && (!errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != c.code || e.Message == ""):
			t.Errorf("%q: %v, want 400 %s with a message", c.path, err, c.code)
		}
	}
}
