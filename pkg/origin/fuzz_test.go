package origin

import (
	"net/http"
	"strings"
	"testing"
)

// The fuzz targets feed the parsers what a hostile client can send. Each
// checks that the parser never panics and that what it accepts is sane.
// Seed corpora live in testdata/fuzz.

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}`), mediaTypeOCIManifest)
	f.Add([]byte(`{"schemaVersion":2,"manifests":[]}`), "")
	f.Add([]byte(`{"schemaVersion":1}`), mediaTypeDockerSchema1JWS)
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		m, mt, err := parseManifest(body, contentType)
		if err != nil {
			if !isAPIError(err) {
				t.Fatalf("rejection is not an API error: %v", err)
			}
			return
		}
		if !isImageType(mt) && !isIndexType(mt) {
			t.Fatalf("accepted media type %q", mt)
		}
		if isImageType(mt) && m.Config == nil {
			t.Fatal("accepted an image manifest without config")
		}
	})
}

func FuzzParseRoute(f *testing.F) {
	for _, p := range []string{"/v2/", "/v2/_catalog", "/v2/a/b/manifests/latest", "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/x", "/v2/a/blobs/sha256:00", "/v2/a/tags/list", "/v2/a/referrers/sha256:00", "/v2/blobs/blobs/uploads/"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, ok := parseRoute(p)
		if !ok {
			return
		}
		if rt.name != "" && validateName(rt.name) == nil && strings.Contains(rt.name, "//") {
			t.Fatalf("valid name with empty component %q", rt.name)
		}
		if rt.kind != routeBase && rt.kind != routeCatalog && !strings.HasPrefix(p, "/v2/"+rt.name+"/") {
			t.Fatalf("route %+v is not a prefix of %q", rt, p)
		}
	})
}

func FuzzParseRange(f *testing.F) {
	f.Add("bytes=0-99", int64(100))
	f.Add("bytes=-5", int64(10))
	f.Add("bytes=5-", int64(10))
	f.Add("bytes=1-2,4-5", int64(10))
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return
		}
		br, err := parseRange(h, size)
		if err != nil {
			return
		}
		if br.start < 0 || br.length <= 0 || br.start+br.length > size {
			t.Fatalf("range %q on %d bytes gave start %d length %d", h, size, br.start, br.length)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	f.Add("0-99")
	f.Add("bytes 0-99/100")
	f.Add("bytes=5-9")
	f.Fuzz(func(t *testing.T, h string) {
		start, end, err := parseContentRange(h)
		if err == nil && (start < 0 || end < start) {
			t.Fatalf("Content-Range %q gave %d-%d", h, start, end)
		}
	})
}

func TestParseRoute(t *testing.T) {
	cases := []struct {
		path       string
		kind, name string
		ref        string
	}{
		{"/v2/", routeBase, "", ""},
		{"/v2/_catalog", routeCatalog, "", ""},
		{"/v2/library/ubuntu/manifests/22.04", routeManifest, "library/ubuntu", "22.04"},
		{"/v2/a/blobs/uploads/", routeUploads, "a", ""},
		{"/v2/a/b/blobs/uploads/1234", routeUpload, "a/b", "1234"},
		{"/v2/a/blobs/sha256:abc", routeBlob, "a", "sha256:abc"},
		{"/v2/blobs/blobs/sha256:abc", routeBlob, "blobs", "sha256:abc"},
		{"/v2/x/manifests/tags/list", routeTags, "x/manifests", ""},
		{"/v2/a/referrers/sha256:abc", routeReferrers, "a", "sha256:abc"},
	}
	for _, c := range cases {
		rt, ok := parseRoute(c.path)
		if !ok || rt.kind != c.kind || rt.name != c.name || rt.ref != c.ref {
			t.Errorf("parseRoute(%q) = %+v, %v; want %s %q %q", c.path, rt, ok, c.kind, c.name, c.ref)
		}
	}
	if _, ok := parseRoute("/v1/x"); ok {
		t.Error("a /v1 path was routed")
	}
}

func TestParseRange(t *testing.T) {
	cases := []struct {
		h             string
		size          int64
		start, length int64
		ok            bool
	}{
		{"bytes=0-0", 10, 0, 1, true},
		{"bytes=2-", 10, 2, 8, true},
		{"bytes=-3", 10, 7, 3, true},
		{"bytes=5-100", 10, 5, 5, true},
		{"bytes=10-", 10, 0, 0, false},
		{"bytes=5-2", 10, 0, 0, false},
		{"bytes=0-1,3-4", 10, 0, 0, false},
		{"items=0-1", 10, 0, 0, false},
		{"bytes=+1-2", 10, 0, 0, false},
	}
	for _, c := range cases {
		br, err := parseRange(c.h, c.size)
		if (err == nil) != c.ok || (c.ok && (br.start != c.start || br.length != c.length)) {
			t.Errorf("parseRange(%q, %d) = %+v, %v; want %d+%d ok=%v", c.h, c.size, br, err, c.start, c.length, c.ok)
		}
	}
}

func TestValidateName(t *testing.T) {
	good := []string{"a", "library/ubuntu", "path1/team-a/app_1", "a.b/c__d"}
	bad := []string{"", "A", "a//b", "/a", "a/", "a/../b", "a/_layers", strings.Repeat("a", 256), "a:b"}
	for _, n := range good {
		if err := validateName(n); err != nil {
			t.Errorf("validateName(%q) rejected a valid name: %v", n, err)
		}
	}
	for _, n := range bad {
		err := validateName(n)
		if err == nil {
			t.Errorf("validateName(%q) accepted an invalid name", n)
			continue
		}
		if ae := err.(*apiError); ae.Status != http.StatusBadRequest || ae.Code != codeNameInvalid {
			t.Errorf("validateName(%q) = %d %s", n, ae.Status, ae.Code)
		}
	}
}
