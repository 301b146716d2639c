package origin

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// Repository names and tags as the distribution spec defines them. Not
// reference.NameRegexp: that one also takes a registry host as the first
// component ("Host:5000/app", upper case and a port allowed), which is no
// repository name.
var (
	nameRegexp = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRegexp  = regexp.MustCompile(`^` + reference.TagRegexp.String() + `$`)
)

// maxNameLength is the reference registry's limit on a repository name, kept
// so that names written by one can always be read by the other.
const maxNameLength = 255

// route is what a /v2/ path asks for.
type route struct {
	kind string // one of the route* constants
	name string // repository name
	ref  string // tag, digest or upload id, depending on kind
}

const (
	routeBase      = "base"
	routeCatalog   = "catalog"
	routeTags      = "tags"
	routeManifest  = "manifest"
	routeBlob      = "blob"
	routeUploads   = "uploads" // POST .../blobs/uploads/
	routeUpload    = "upload"  // .../blobs/uploads/<id>
	routeReferrers = "referrers"
)

// parseRoute splits a /v2/ path into what it asks for. Repository names may
// contain slashes, so the path is read from its end, where the API's own
// words are. Names are not validated here.
func parseRoute(path string) (route, bool) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		if path == "/v2" {
			return route{kind: routeBase}, true
		}
		return route{}, false
	}
	if rest == "" {
		return route{kind: routeBase}, true
	}
	if rest == "_catalog" {
		return route{kind: routeCatalog}, true
	}
	parts := strings.Split(rest, "/")
	n := len(parts)
	switch {
	case n >= 3 && parts[n-2] == "tags" && parts[n-1] == "list":
		return route{kind: routeTags, name: strings.Join(parts[:n-2], "/")}, true
	case n >= 3 && parts[n-2] == "manifests":
		return route{kind: routeManifest, name: strings.Join(parts[:n-2], "/"), ref: parts[n-1]}, true
	case n >= 4 && parts[n-3] == "blobs" && parts[n-2] == "uploads":
		if parts[n-1] == "" {
			return route{kind: routeUploads, name: strings.Join(parts[:n-3], "/")}, true
		}
		return route{kind: routeUpload, name: strings.Join(parts[:n-3], "/"), ref: parts[n-1]}, true
	case n >= 3 && parts[n-2] == "blobs" && parts[n-1] == "uploads":
		return route{kind: routeUploads, name: strings.Join(parts[:n-2], "/")}, true
	case n >= 3 && parts[n-2] == "blobs":
		return route{kind: routeBlob, name: strings.Join(parts[:n-2], "/"), ref: parts[n-1]}, true
	case n >= 3 && parts[n-2] == "referrers":
		return route{kind: routeReferrers, name: strings.Join(parts[:n-2], "/"), ref: parts[n-1]}, true
	}
	return route{}, false
}

// canonicalPath refuses a request path (as sent, URL.EscapedPath) that is
// not canonical: dot segments, percent-encoded '/', '.' or '\', empty
// components (doubled slashes), backslashes and control characters. A
// proxy, a storage path or a client resolving such a path may land on
// another repository than the one access control checked, and answering it
// with a redirect to the cleaned path (as net/http's ServeMux does) would
// have the client's next request name that other repository. No registry
// client sends any of them, so they are refused with 400 NAME_INVALID.
func canonicalPath(escaped string) error {
	lower := strings.ToLower(escaped)
	for _, enc := range []string{"%2f", "%2e", "%5c"} {
		if strings.Contains(lower, enc) {
			return errNotCanonical(escaped, "a percent-encoded '/', '.' or '\\'")
		}
	}
	p, err := url.PathUnescape(escaped)
	if err != nil {
		return errNotCanonical(escaped, "a malformed percent-encoding")
	}
	if strings.Contains(p, "//") {
		return errNotCanonical(escaped, "an empty path component")
	}
	if strings.ContainsFunc(p, func(c rune) bool { return c < 0x20 || c == 0x7f || c == '\\' }) {
		return errNotCanonical(escaped, "a backslash or control character")
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return errNotCanonical(escaped, "a dot segment")
		}
	}
	return nil
}

func errNotCanonical(escaped, why string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: codeNameInvalid,
		Message: "the request path " + quoteShort(escaped) + " is not canonical (it has " + why +
			"): send repository names and references as they are, without dot segments, empty components or percent-encoded separators"}
}

// validate checks the route's repository name and reference, answering as
// the distribution spec says, 400 and never a 404 that reads as "not pushed
// yet": NAME_INVALID, DIGEST_INVALID for a malformed or unsupported digest,
// MANIFEST_INVALID for a malformed tag. Upload ids are the registry's own,
// and an unknown one is BLOB_UPLOAD_UNKNOWN whatever its shape.
func (rt route) validate() error {
	if rt.kind == routeBase || rt.kind == routeCatalog {
		return nil
	}
	if err := validateName(rt.name); err != nil {
		return err
	}
	switch rt.kind {
	case routeManifest:
		if !isDigestRef(rt.ref) {
			return validateTag(rt.ref)
		}
		_, err := parseDigest(rt.ref)
		return err
	case routeBlob, routeReferrers:
		_, err := parseDigest(rt.ref)
		return err
	}
	return nil
}

// validateName checks a repository name against the distribution grammar.
func validateName(name string) error {
	if name == "" || len(name) > maxNameLength || !nameRegexp.MatchString(name) {
		return &apiError{Status: http.StatusBadRequest, Code: codeNameInvalid,
			Message: "invalid repository name: use lowercase letters, digits and separators (., _, __, -) between path components, at most 255 characters",
			Detail:  map[string]string{"name": name}}
	}
	return nil
}

// parseDigest parses a digest from a request, answering DIGEST_INVALID.
func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", &apiError{Status: http.StatusBadRequest, Code: codeDigestInvalid,
			Message: "invalid digest " + quoteShort(s) + ": want <algorithm>:<hex>, with sha256 or sha512",
			Detail:  map[string]string{"digest": s}, cause: err}
	}
	if d.Algorithm() != digest.SHA256 && d.Algorithm() != digest.SHA512 {
		return "", &apiError{Status: http.StatusBadRequest, Code: codeDigestInvalid,
			Message: "unsupported digest algorithm " + quoteShort(string(d.Algorithm())) + ": use sha256 or sha512"}
	}
	return d, nil
}

// isDigestRef tells a digest reference from a tag: tags cannot contain ':'.
func isDigestRef(ref string) bool { return strings.Contains(ref, ":") }

func validateTag(tag string) error {
	if !tagRegexp.MatchString(tag) {
		return &apiError{Status: http.StatusBadRequest, Code: codeManifestInvalid,
			Message: "invalid tag " + quoteShort(tag) + ": up to 128 characters of letters, digits, '_', '.', '-', not starting with '.' or '-'",
			Detail:  map[string]string{"tag": tag}}
	}
	return nil
}

// quoteShort quotes s for a message, cut so a hostile input cannot make
// error bodies large.
func quoteShort(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "..."
	}
	return `"` + strings.ToValidUTF8(s, "?") + `"`
}
