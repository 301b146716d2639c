package mirror

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/auth"
)

// route is a parsed request path: /v2/ or the token endpoint.
type route struct {
	kind string // one of the route* constants, also the metrics' handler label
	name string // repository
	ref  string // tag or digest (manifest), digest (blob, referrers)
}

const (
	routeInvalid   = "invalid" // refused before routing: not canonical, not /v2
	routePing      = "ping"
	routeCatalog   = "catalog"
	routeTags      = "tags"
	routeManifest  = "manifest"
	routeBlob      = "blob"
	routeReferrers = "referrers"
	routeUpload    = "upload"
	routeOther     = "other" // any other /v2/ read endpoint: proxied
	routeToken     = "token" // auth.TokenPath: proxied to the origin's
)

// Repository names and tags as the distribution spec defines them, with
// the reference registry's 255-character limit on names (which the origin
// keeps too). Checked before a name or tag goes into a URL to the origin
// or a cache key.
var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

const maxNameLength = 255

// parseRoute splits a request's escaped path (URL.EscapedPath) into what
// it asks for. A path that is not canonical is refused with 400
// NAME_INVALID before anything else: dot segments, percent-encoded '/',
// '.' or '\', doubled slashes, backslashes and control characters. The
// origin or a proxy in front of it may resolve such a path to another
// repository than the one the mirror checked and cached under, and
// answering with a redirect to the cleaned path (as net/http's ServeMux
// does) would let the client's next request name the other repository
// instead; nothing a registry client sends needs any of them. Names and
// references are checked by route.validate.
func parseRoute(escaped string) (route, *apiError) {
	lower := strings.ToLower(escaped)
	for _, enc := range []string{"%2f", "%2e", "%5c"} {
		if strings.Contains(lower, enc) {
			return route{kind: routeInvalid}, errNotCanonical(escaped, "a percent-encoded '/', '.' or '\\'")
		}
	}
	p, err := url.PathUnescape(escaped)
	if err != nil {
		return route{kind: routeInvalid}, errNotCanonical(escaped, "a malformed percent-encoding")
	}
	if strings.Contains(p, "//") {
		return route{kind: routeInvalid}, errNotCanonical(escaped, "an empty path component")
	}
	if strings.ContainsFunc(p, func(c rune) bool { return c < 0x20 || c == 0x7f || c == '\\' }) {
		return route{kind: routeInvalid}, errNotCanonical(escaped, "a backslash or control character")
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return route{kind: routeInvalid}, errNotCanonical(escaped, "a dot segment")
		}
	}

	if p == auth.TokenPath {
		return route{kind: routeToken}, nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		if p == "/v2" {
			return route{kind: routePing}, nil
		}
		return route{kind: routeInvalid}, newError(http.StatusNotFound, codeUnsupported,
			"%s is not a registry API path: this mirror serves /v2/ and the token endpoint %s", quoteShort(p), auth.TokenPath)
	}
	if rest == "" {
		return route{kind: routePing}, nil
	}
	if rest == "_catalog" {
		return route{kind: routeCatalog}, nil
	}
	// Read from the end, where the API's own words are: repository names
	// may themselves contain "manifests" or "blobs" as a component.
	parts := strings.Split(rest, "/")
	n := len(parts)
	name := func(k int) string { return strings.Join(parts[:n-k], "/") }
	switch {
	case n >= 3 && parts[n-2] == "tags" && parts[n-1] == "list":
		return route{kind: routeTags, name: name(2)}, nil
	case n >= 3 && parts[n-2] == "manifests":
		return route{kind: routeManifest, name: name(2), ref: parts[n-1]}, nil
	case n >= 4 && parts[n-3] == "blobs" && parts[n-2] == "uploads":
		return route{kind: routeUpload, name: name(3)}, nil
	case n >= 3 && parts[n-2] == "blobs" && parts[n-1] == "uploads":
		return route{kind: routeUpload, name: name(2)}, nil
	case n >= 3 && parts[n-2] == "blobs":
		return route{kind: routeBlob, name: name(2), ref: parts[n-1]}, nil
	case n >= 3 && parts[n-2] == "referrers":
		return route{kind: routeReferrers, name: name(2), ref: parts[n-1]}, nil
	}
	return route{kind: routeOther}, nil
}

// validate checks the route's repository name and reference, answering
// as the distribution spec says: NAME_INVALID, DIGEST_INVALID for a
// malformed digest, MANIFEST_INVALID for a malformed tag; all 400, as a
// registry answers them, not a 404 that reads as "not pushed yet".
func (rt route) validate() *apiError {
	switch rt.kind {
	case routeTags, routeManifest, routeBlob, routeReferrers:
	default:
		return nil
	}
	if len(rt.name) > maxNameLength || !nameRE.MatchString(rt.name) {
		return newError(http.StatusBadRequest, codeNameInvalid,
			"invalid repository name %s: use lowercase letters, digits and separators (., _, __, -) between path components, at most %d characters",
			quoteShort(rt.name), maxNameLength)
	}
	switch {
	case rt.kind == routeTags:
		return nil
	case rt.kind == routeManifest && !strings.Contains(rt.ref, ":"):
		if !tagRE.MatchString(rt.ref) {
			return newError(http.StatusBadRequest, codeManifestInvalid,
				"invalid tag %s: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'", quoteShort(rt.ref))
		}
		return nil
	}
	if _, err := digest.Parse(rt.ref); err != nil {
		return newError(http.StatusBadRequest, codeDigestInvalid,
			"invalid digest %s: want <algorithm>:<lowercase hex>, e.g. sha256: and 64 hex digits", quoteShort(rt.ref))
	}
	return nil
}

// errNotCanonical refuses a path that is not canonical, saying why.
func errNotCanonical(escaped, why string) *apiError {
	return newError(http.StatusBadRequest, codeNameInvalid,
		"the request path %s is not canonical (it has %s): send repository names and references as they are, without dot segments, empty components or percent-encoded separators",
		quoteShort(escaped), why)
}

// quoteShort quotes s for a message, cut so that a hostile path cannot
// make error bodies and logs large.
func quoteShort(s string) string {
	const limit = 80
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strconv.Quote(s)
}
