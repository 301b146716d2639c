package ociapi

import (
	"errors"
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"
)

// The fuzz targets feed the parsers what a hostile client can send to the
// origin or to an agent's mirror, both of which parse with this package.
// Each checks that the parser never panics and that what it accepts is
// sane. Seed corpora live in testdata/fuzz; `make fuzz` runs them.

var routeSeeds = []string{
	"/v2/", "/v2", "/v2/_catalog", "/v2/a/b/manifests/latest", "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/x",
	"/v2/a/blobs/sha256:00", "/v2/a/tags/list", "/v2/a/referrers/sha256:00", "/v2/blobs/blobs/uploads/",
	"/v2/a/%2e%2e/b/manifests/x", "/v2/a%2Fb/tags/list", "/v2//a/blobs/x", "/v2/a/./manifests/x",
	"/v2/a/manifests/sha256%3A00", "/v2/a/b/x/y", "/v2/a%41/tags/list", "/v2/a/manifests/latest%00",
	"/v2/a/blobs/uploads/../../../x/blobs/uploads/", `/v2/a\b/manifests/latest`, "/metrics/../v2/_catalog",
	"/v2/a/manifests/sha256:" + strings.Repeat("0", 64),
}

// FuzzParseRoute: whatever passes CanonicalPath, ParseRoute and Validate
// is canonical and rebuilt exactly from the route, so the origin behind a
// mirror, a proxy or a storage path cannot resolve it to another
// repository than the one access control checked.
func FuzzParseRoute(f *testing.F) {
	for _, p := range routeSeeds {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, escaped string) {
		decoded, err := CanonicalPath(escaped)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != CodeNameInvalid {
				t.Fatalf("CanonicalPath(%q) refused with %v, want 400 NAME_INVALID", escaped, err)
			}
			return
		}
		if want, uerr := url.PathUnescape(escaped); uerr != nil || want != decoded {
			t.Fatalf("CanonicalPath(%q) = %q, which is not its unescaping (%q, %v)", escaped, decoded, want, uerr)
		}
		if strings.Contains(decoded, "//") || strings.Contains(decoded, "\\") {
			t.Fatalf("CanonicalPath(%q) accepted an empty component or a backslash", escaped)
		}
		for seg := range strings.SplitSeq(decoded, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("CanonicalPath(%q) accepted a dot segment", escaped)
			}
		}
		rt, ok := ParseRoute(decoded)
		if !ok {
			return
		}
		if rt.Kind != Base && rt.Kind != Catalog && !strings.HasPrefix(decoded, "/v2/"+rt.Name+"/") {
			t.Fatalf("route %+v is not a prefix of %q", rt, decoded)
		}
		if err := rt.Validate(); err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest {
				t.Fatalf("Validate of %+v = %v, want a 400 *Error", rt, err)
			}
			return
		}
		var rebuilt string
		switch rt.Kind {
		case Base, Catalog:
			return
		case Tags:
			rebuilt = "/v2/" + rt.Name + "/tags/list"
		case Manifest:
			rebuilt = "/v2/" + rt.Name + "/manifests/" + rt.Ref
		case Blob:
			rebuilt = "/v2/" + rt.Name + "/blobs/" + rt.Ref
		case Referrers:
			rebuilt = "/v2/" + rt.Name + "/referrers/" + rt.Ref
		case Uploads:
			rebuilt = strings.TrimSuffix(decoded, "/") // with or without the slash
			if rebuilt != "/v2/"+rt.Name+"/blobs/uploads" {
				t.Fatalf("%q routed to %+v", decoded, rt)
			}
			rebuilt = decoded
		case Upload:
			rebuilt = "/v2/" + rt.Name + "/blobs/uploads/" + rt.Ref
		default:
			t.Fatalf("%q routed to unknown kind %q", decoded, rt.Kind)
		}
		if rebuilt != decoded {
			t.Fatalf("%q routed to %+v, which names %q", decoded, rt, rebuilt)
		}
		if !ValidName(rt.Name) || strings.Contains(rt.Name, "//") {
			t.Fatalf("%q: Validate accepted name %q", decoded, rt.Name)
		}
	})
}

// FuzzCanonicalPath: a path CanonicalPath accepts is its own clean form
// (but for a trailing slash), so no cleaner between the client and the
// storage can make it name anything else.
func FuzzCanonicalPath(f *testing.F) {
	for _, p := range routeSeeds {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, escaped string) {
		if !strings.HasPrefix(escaped, "/") {
			return
		}
		p, err := CanonicalPath(escaped)
		if err != nil {
			return
		}
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && p != "/" {
			clean += "/"
		}
		if clean != p {
			t.Fatalf("accepted %q, which cleans to %q", escaped, clean)
		}
	})
}

func FuzzParseRange(f *testing.F) {
	f.Add("bytes=0-99", int64(100))
	f.Add("bytes=-5", int64(10))
	f.Add("bytes=5-", int64(10))
	f.Add("bytes=1-2,4-5", int64(10))
	f.Add("items=0-1", int64(10))
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return
		}
		br, partial, err := ParseRange(h, size)
		if err != nil || !partial {
			if br != (ByteRange{}) || (err != nil && partial) {
				t.Fatalf("range %q on %d bytes: %+v partial=%v with %v", h, size, br, partial, err)
			}
			return
		}
		if br.Start < 0 || br.Length <= 0 || br.Start+br.Length > size || br.Last() >= size {
			t.Fatalf("range %q on %d bytes gave start %d length %d", h, size, br.Start, br.Length)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	f.Add("0-99")
	f.Add("bytes 0-99/100")
	f.Add("bytes=5-9")
	f.Fuzz(func(t *testing.T, h string) {
		start, end, err := ParseContentRange(h)
		if err == nil && (start < 0 || end < start) {
			t.Fatalf("Content-Range %q gave %d-%d", h, start, end)
		}
	})
}
