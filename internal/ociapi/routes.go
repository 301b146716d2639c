package ociapi

import (
	"net/http"
	"net/url"
	"strings"
)

// The kinds of route of the distribution API. Each doubles as the metrics
// label of its route.
const (
	Base      = "base"      // /v2/
	Catalog   = "catalog"   // /v2/_catalog
	Tags      = "tags"      // /v2/<name>/tags/list
	Manifest  = "manifest"  // /v2/<name>/manifests/<reference>
	Blob      = "blob"      // /v2/<name>/blobs/<digest>
	Uploads   = "uploads"   // /v2/<name>/blobs/uploads/, where a push starts
	Upload    = "upload"    // /v2/<name>/blobs/uploads/<id>
	Referrers = "referrers" // /v2/<name>/referrers/<digest>
)

// Route is a parsed /v2/ path.
type Route struct {
	Kind string // one of the kinds above
	Name string // repository name
	Ref  string // tag or digest (Manifest), digest (Blob, Referrers), upload id (Upload)
}

// ParseRoute splits a /v2/ path (decoded, URL.Path) into what it asks for;
// ok is false for a path that is not one of the API's. Repository names
// may contain slashes, and components called "manifests" or "blobs", so
// the path is read from its end, where the API's own words are. Names and
// references are not checked here: see Validate. The path is expected to
// have passed CanonicalPath.
func ParseRoute(path string) (rt Route, ok bool) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		if path == "/v2" {
			return Route{Kind: Base}, true
		}
		return Route{}, false
	}
	switch rest {
	case "":
		return Route{Kind: Base}, true
	case "_catalog":
		return Route{Kind: Catalog}, true
	}
	parts := strings.Split(rest, "/")
	n := len(parts)
	name := func(k int) string { return strings.Join(parts[:n-k], "/") }
	switch {
	case n >= 3 && parts[n-2] == "tags" && parts[n-1] == "list":
		return Route{Kind: Tags, Name: name(2)}, true
	case n >= 3 && parts[n-2] == "manifests":
		return Route{Kind: Manifest, Name: name(2), Ref: parts[n-1]}, true
	case n >= 4 && parts[n-3] == "blobs" && parts[n-2] == "uploads":
		if parts[n-1] == "" {
			return Route{Kind: Uploads, Name: name(3)}, true
		}
		return Route{Kind: Upload, Name: name(3), Ref: parts[n-1]}, true
	case n >= 3 && parts[n-2] == "blobs" && parts[n-1] == "uploads":
		return Route{Kind: Uploads, Name: name(2)}, true
	case n >= 3 && parts[n-2] == "blobs":
		return Route{Kind: Blob, Name: name(2), Ref: parts[n-1]}, true
	case n >= 3 && parts[n-2] == "referrers":
		return Route{Kind: Referrers, Name: name(2), Ref: parts[n-1]}, true
	}
	return Route{}, false
}

// Validate checks the route's repository name and reference, answering as
// the distribution spec says, 400 and never a 404 that reads as "not
// pushed yet": NAME_INVALID, DIGEST_INVALID for a malformed or unsupported
// digest, MANIFEST_INVALID for a malformed tag. Upload ids are the
// registry's own, and an unknown one is BLOB_UPLOAD_UNKNOWN whatever its
// shape. The error is an *Error.
func (rt Route) Validate() error {
	if rt.Kind == Base || rt.Kind == Catalog {
		return nil
	}
	if err := ValidateName(rt.Name); err != nil {
		return err
	}
	switch rt.Kind {
	case Manifest:
		if !IsDigestRef(rt.Ref) {
			return ValidateTag(rt.Ref)
		}
		_, err := ParseDigest(rt.Ref)
		return err
	case Blob, Referrers:
		_, err := ParseDigest(rt.Ref)
		return err
	}
	return nil
}

// CanonicalPath refuses a request path (as sent: URL.EscapedPath) that is
// not canonical, with 400 NAME_INVALID: dot segments, percent-encoded '/',
// '.' or '\', empty components (doubled slashes), backslashes and control
// characters. A proxy, the origin behind a mirror, a storage path or a
// client resolving such a path may land on another repository than the
// one access control checked or a cache is keyed by, and answering it
// with a redirect to the cleaned path (as net/http's ServeMux does) would
// have the client's next request name that other repository. No registry
// client sends any of them. A canonical path is returned decoded.
func CanonicalPath(escaped string) (string, error) {
	lower := strings.ToLower(escaped)
	for _, enc := range []string{"%2f", "%2e", "%5c"} {
		if strings.Contains(lower, enc) {
			return "", errNotCanonical(escaped, "a percent-encoded '/', '.' or '\\'")
		}
	}
	p, err := url.PathUnescape(escaped)
	if err != nil {
		return "", errNotCanonical(escaped, "a malformed percent-encoding")
	}
	if strings.Contains(p, "//") {
		return "", errNotCanonical(escaped, "an empty path component")
	}
	if strings.ContainsFunc(p, func(c rune) bool { return c < 0x20 || c == 0x7f || c == '\\' }) {
		return "", errNotCanonical(escaped, "a backslash or control character")
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return "", errNotCanonical(escaped, "a dot segment")
		}
	}
	return p, nil
}

func errNotCanonical(escaped, why string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeNameInvalid,
		Message: "the request path " + Quote(escaped) + " is not canonical (it has " + why +
			"): send repository names and references as they are, without dot segments, empty components or percent-encoded separators"}
}
