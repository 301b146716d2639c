package origin

import (
	"context"
	"errors"
	"net/http"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// SetAuthorizer turns access control on: every registry API request is
// authenticated and checked against a's rules before its handler runs, and
// a's token endpoint is served at auth.TokenPath. Without an authorizer
// (nil, the default) the origin is open to anyone who can reach it. Call it
// once, before serving.
func (s *Server) SetAuthorizer(a *auth.Authorizer) {
	s.authz = a
	if a != nil {
		s.mux.Handle(auth.TokenPath, a.TokenHandler())
	}
}

// need is what a request must be allowed before its handler runs.
type need struct {
	kind   needKind
	repo   string      // the repository checked, for needAction
	action auth.Action // the action decided, for needAction
	// scope is the actions a challenge asks for: Docker clients ask for
	// pull and push together when they push, and registry:2 challenges so.
	scope []string
}

type needKind int

const (
	// needAction: the subject must be allowed action on repo.
	needAction needKind = iota
	// needLogin: the API base, /v2/. Any authenticated subject passes; an
	// anonymous one is challenged (with no scope) so that a client learns
	// the realm, as registry:2 with token auth answers.
	needLogin
	// needFilter: the catalog, which anyone may ask for and which lists
	// only the repositories the subject may pull.
	needFilter
)

// requiredAccess maps a route and method to what the request needs. Methods
// a route does not serve need pull, so that the 405 they get is answered
// only to someone who may read the repository anyway.
func requiredAccess(rt ociapi.Route, method string) need {
	pull := need{repo: rt.Name, action: auth.Pull, scope: pullScope}
	push := need{repo: rt.Name, action: auth.Push, scope: pushScope}
	del := need{repo: rt.Name, action: auth.Delete, scope: deleteScope}
	switch rt.Kind {
	case ociapi.Base:
		return need{kind: needLogin}
	case ociapi.Catalog:
		return need{kind: needFilter}
	case ociapi.Manifest:
		switch method {
		case http.MethodPut:
			return push
		case http.MethodDelete:
			return del
		}
	case ociapi.Blob:
		if method == http.MethodDelete {
			return del
		}
	case ociapi.Uploads, ociapi.Upload:
		// Every method on an upload session, reading its progress and
		// cancelling it included: sessions are part of a push.
		return push
	}
	return pull
}

// The scopes challenges ask for, shared: requiredAccess runs on every
// request, and nothing modifies them.
var (
	pullScope   = []string{string(auth.Pull)}
	pushScope   = []string{string(auth.Pull), string(auth.Push)}
	deleteScope = []string{string(auth.Delete)}
)

// subjectKey is the request context key of the authenticated auth.Subject.
type subjectKey struct{}

// authorize decides whether r may reach its handler. It returns r carrying
// the subject, for the handlers that decide more (the catalog, mounts), or
// the error to answer with, its challenge already set on w. It runs before
// any handler touches storage, so a denial never says whether what was
// asked for exists.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, rt ociapi.Route) (*http.Request, error) {
	if s.authz == nil {
		return r, nil
	}
	nd := requiredAccess(rt, r.Method)
	sub, err := s.authz.Authenticate(r)
	if err != nil {
		if !errors.Is(err, auth.ErrBadCredentials) {
			return nil, err
		}
		// Never fall back to anonymous: a client with a typo in its
		// password must hear so, not get a public subset.
		return nil, s.deny(w, r, nd, sub, denyBadCredentials, err)
	}
	if needsSubject(rt) {
		r = r.WithContext(context.WithValue(r.Context(), subjectKey{}, sub))
	}
	switch nd.kind {
	case needLogin:
		if sub.Anonymous() {
			return nil, s.deny(w, r, nd, sub, denyAnonymous, nil)
		}
		return r, nil
	case needFilter:
		return r, nil
	}
	dec := s.authz.Decide(sub, nd.repo, nd.action)
	if dec.Allowed {
		return r, nil
	}
	reason := denyForbidden
	switch {
	case sub.Anonymous():
		reason = denyAnonymous
	case sub.Token != nil:
		reason = denyInsufficientScope
	}
	return nil, s.deny(w, r, nd, sub, reason, errors.New(dec.Reason()))
}

// Why a request was denied, the reason label of
// shoal_origin_auth_denied_total.
const (
	denyBadCredentials    = "bad_credentials"
	denyAnonymous         = "anonymous"
	denyInsufficientScope = "insufficient_scope"
	denyForbidden         = "forbidden"
)

// deny builds the answer to a denied request: 401 UNAUTHORIZED with a
// challenge for the scope needed when credentials (or better ones) could
// help, 403 DENIED to a user who authenticated with a password and is not
// allowed. The message is the same whether or not the repository or the
// content exists.
func (s *Server) deny(w http.ResponseWriter, r *http.Request, nd need, sub auth.Subject, reason string, cause error) error {
	action := string(nd.action)
	var scope []auth.Access
	switch nd.kind {
	case needAction:
		scope = []auth.Access{{Type: "repository", Name: nd.repo, Actions: nd.scope}}
	case needLogin:
		action = "login"
	case needFilter:
		action = "catalog"
	}
	s.metrics.authDenied.WithLabelValues(action, reason).Inc()
	level := s.log.Debug
	if reason == denyBadCredentials || reason == denyForbidden {
		level = s.log.Info
	}
	level("access denied", "method", r.Method, "path", r.URL.Path, "user", sub.User, "addr", sub.Addr,
		"action", action, "reason", reason, "err", cause)

	ae := &ociapi.Error{Status: http.StatusUnauthorized, Code: ociapi.CodeUnauthorized, Cause: cause}
	if scope != nil {
		ae.Detail = scope
	}
	switch reason {
	case denyBadCredentials:
		ae.Message = "invalid credentials: the user name, password or token was not accepted; log in again"
	case denyAnonymous:
		if nd.kind == needAction {
			ae.Message = "authentication required to " + action + " repository " + ociapi.Quote(nd.repo) + "; log in first"
		} else {
			ae.Message = "authentication required; log in first"
		}
	case denyInsufficientScope:
		ae.Message = "the token does not grant " + action + " on repository " + ociapi.Quote(nd.repo) +
			"; ask the token endpoint for this scope, with credentials allowed it"
	case denyForbidden:
		return &ociapi.Error{Status: http.StatusForbidden, Code: ociapi.CodeDenied, Detail: ae.Detail, Cause: cause,
			Message: "user " + ociapi.Quote(sub.User) + " may not " + action + " repository " + ociapi.Quote(nd.repo)}
	}
	w.Header().Set("WWW-Authenticate", s.authz.Challenge(r, scope, reason == denyInsufficientScope))
	return ae
}

// needsSubject reports whether the handlers of rt decide more than
// authorize did, and so need the subject (subjectOf): the catalog filters
// by it, uploads check mounts and count sessions by it. Other requests go
// without: a context value and a request copy on every manifest and blob
// GET is a cost access control need not add.
func needsSubject(rt ociapi.Route) bool {
	return rt.Kind == ociapi.Catalog || rt.Kind == ociapi.Uploads || rt.Kind == ociapi.Upload
}

// subjectOf returns the subject authorize attached to r (only for the
// routes needsSubject names: elsewhere it reports false, and mayPull
// denies).
func subjectOf(r *http.Request) (auth.Subject, bool) {
	sub, ok := r.Context().Value(subjectKey{}).(auth.Subject)
	return sub, ok
}

// mayPull reports whether the request's subject may pull repo: always with
// access control off; never for a request authorize did not see.
func (s *Server) mayPull(r *http.Request, repo string) bool {
	if s.authz == nil {
		return true
	}
	sub, ok := subjectOf(r)
	return ok && s.authz.Decide(sub, repo, auth.Pull).Allowed
}

// pullFilter is the catalog's filter: nil (everything) with access control
// off, else the repositories the request's subject may pull. A bearer token
// granted the registry's catalog scope lists by its user's rules, as
// registry:2 lists by that scope; any other token lists only the
// repositories it grants pull on.
func (s *Server) pullFilter(r *http.Request) func(string) bool {
	if s.authz == nil {
		return nil
	}
	sub, ok := subjectOf(r)
	if !ok {
		return func(string) bool { return false }
	}
	if sub.Token != nil && grantsCatalog(sub.Token) {
		sub.Token = nil
	}
	return func(repo string) bool { return s.authz.Decide(sub, repo, auth.Pull).Allowed }
}

// grantsCatalog reports whether a token carries registry:catalog:*, the
// scope Docker clients ask for to list the catalog.
func grantsCatalog(c *auth.Claims) bool {
	for _, a := range c.Access {
		if a.Type == "registry" && a.Name == "catalog" {
			for _, act := range a.Actions {
				if act == "*" {
					return true
				}
			}
		}
	}
	return false
}
