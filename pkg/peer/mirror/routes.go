package mirror

import (
	"net/http"
	"strings"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// route is a parsed request path: /v2/ or the token endpoint.
type route struct {
	kind string // one of the route* constants, also the metrics' handler label
	name string // repository
	ref  string // tag or digest (manifest), digest (blob, referrers)
}

// The mirror's routes, as its metrics label them: the API's (ociapi.Base
// and the rest) with pushes in one, and the mirror's own.
const (
	routeInvalid   = "invalid" // refused before routing: not canonical, not /v2
	routePing      = "ping"
	routeCatalog   = ociapi.Catalog
	routeTags      = ociapi.Tags
	routeManifest  = ociapi.Manifest
	routeBlob      = ociapi.Blob
	routeReferrers = ociapi.Referrers
	routeUpload    = "upload"   // every upload path: refused
	routeOther     = "other"    // any other /v2/ read endpoint: proxied
	routeToken     = "token"    // auth.TokenPath: proxied to the origin's
	routePrefetch  = "prefetch" // PrefetchPrefix: the agent's own prefetch endpoint
)

// parseRoute splits a request's escaped path (URL.EscapedPath) into what
// it asks for. A path that is not canonical (ociapi.CanonicalPath) is
// refused with 400 NAME_INVALID before anything else: the origin or a
// proxy in front of it may resolve it to another repository than the one
// the mirror checked and cached under. Names and references are checked
// by route.validate.
func parseRoute(escaped string) (route, *ociapi.Error) {
	p, err := ociapi.CanonicalPath(escaped)
	if err != nil {
		return route{kind: routeInvalid}, asError(err)
	}
	if p == auth.TokenPath {
		return route{kind: routeToken}, nil
	}
	rt, ok := ociapi.ParseRoute(p)
	switch {
	case !ok && strings.HasPrefix(p, "/v2/"):
		return route{kind: routeOther}, nil
	case !ok:
		return route{kind: routeInvalid}, ociapi.Errorf(http.StatusNotFound, ociapi.CodeUnsupported,
			"%s is not a registry API path: this mirror serves /v2/ and the token endpoint %s", ociapi.Quote(p), auth.TokenPath)
	}
	switch rt.Kind {
	case ociapi.Base:
		return route{kind: routePing}, nil
	case ociapi.Uploads, ociapi.Upload:
		return route{kind: routeUpload, name: rt.Name}, nil
	}
	return route{kind: rt.Kind, name: rt.Name, ref: rt.Ref}, nil
}

// validate checks the route's repository name and reference as the origin
// does (ociapi.Route.Validate): NAME_INVALID, DIGEST_INVALID,
// MANIFEST_INVALID, all 400, without asking the origin.
func (rt route) validate() *ociapi.Error {
	switch rt.kind {
	case routeTags, routeManifest, routeBlob, routeReferrers:
		return asError(ociapi.Route{Kind: rt.kind, Name: rt.name, Ref: rt.ref}.Validate())
	}
	return nil
}
