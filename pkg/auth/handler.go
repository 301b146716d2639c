package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// maxTokenForm bounds a POST to the token endpoint: a few scopes and
// credentials, never more.
const maxTokenForm = 64 << 10

// TokenHandler serves the token endpoint (TokenPath) as Docker clients
// expect it (docs/auth.md):
//   - GET, the distribution token spec: optional Basic credentials,
//     `service`, repeated `scope`, `offline_token`, `client_id`, `account`;
//     answers {token, access_token, expires_in, issued_at[, refresh_token]}.
//   - POST, the distribution OAuth2 spec, form-encoded: grant_type
//     password (username, password) or refresh_token (refresh_token), with
//     client_id, service, scope and access_type=offline for a refresh
//     token; answers {access_token, expires_in, scope, issued_at[,
//     refresh_token]}.
//
// A token grants, of what was asked, what the rules allow the requester:
// a scope they may not have is left out, not refused, as registry token
// servers do, and the registry then denies the request that needed it.
func (a *Authorizer) TokenHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			a.tokenGET(w, r)
		case http.MethodPost:
			a.tokenPOST(w, r)
		default:
			w.Header().Set("Allow", "GET, POST")
			writeRegistryError(w, r, http.StatusMethodNotAllowed, "UNSUPPORTED", "the token endpoint answers GET and POST")
		}
	})
}

// tokenResponse is both endpoints' answer; GET leaves Scope out, POST Token.
type tokenResponse struct {
	Token        string  `json:"token,omitempty"`
	AccessToken  string  `json:"access_token"`
	TokenType    string  `json:"token_type"`
	ExpiresIn    int     `json:"expires_in"`
	IssuedAt     string  `json:"issued_at"`
	RefreshToken string  `json:"refresh_token,omitempty"`
	Scope        *string `json:"scope,omitempty"`
}

func (a *Authorizer) tokenGET(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := a.checkService(q.Get("service")); err != nil {
		writeRegistryError(w, r, http.StatusBadRequest, "UNSUPPORTED", err.Error())
		return
	}
	scopes, err := parseScopes(q["scope"])
	if err != nil {
		writeRegistryError(w, r, http.StatusBadRequest, "UNSUPPORTED", err.Error())
		return
	}
	s := Subject{Addr: a.clientAddr(r), CertNames: certNames(r)}
	if h := r.Header.Get("Authorization"); h != "" {
		user, pass, ok := r.BasicAuth()
		if !ok {
			a.refuseGET(w, r, errors.New("the token endpoint takes Basic credentials or none"))
			return
		}
		if err := a.checkPassword(user, pass); err != nil {
			a.refuseGET(w, r, err)
			return
		}
		if account := q.Get("account"); account != "" && account != user {
			writeRegistryError(w, r, http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("account %q is not the user %q the credentials are for", account, user))
			return
		}
		s.User, s.Groups = user, a.groupsOf[user]
	}
	resp, err := a.respond(s, scopes)
	if err != nil {
		writeRegistryError(w, r, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	resp.Token, resp.Scope = resp.AccessToken, nil
	if q.Get("offline_token") == "true" && s.User != "" {
		if resp.RefreshToken, err = a.refreshToken(s.User); err != nil {
			writeRegistryError(w, r, http.StatusInternalServerError, "UNKNOWN", err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// refuseGET answers a GET with bad credentials: 401, in the registry's
// error format, which is what docker login shows.
func (a *Authorizer) refuseGET(w http.ResponseWriter, r *http.Request, err error) {
	a.metrics.badCredentials.WithLabelValues("basic").Inc()
	a.log.Debug("token endpoint: bad credentials", "err", err)
	w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%s", quote(a.cfg.Token.Service)))
	writeRegistryError(w, r, http.StatusUnauthorized, "UNAUTHORIZED", "incorrect username or password")
}

func (a *Authorizer) tokenPOST(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "reading the form: "+err.Error())
		return
	}
	f := r.PostForm
	if f.Get("client_id") == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "client_id is required")
		return
	}
	if err := a.checkService(f.Get("service")); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	scopes, err := parseScopes(f["scope"])
	if err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_scope", err.Error())
		return
	}
	s := Subject{Addr: a.clientAddr(r), CertNames: certNames(r)}
	var refresh string
	switch grant := f.Get("grant_type"); grant {
	case "password":
		user := f.Get("username")
		if err := a.checkPassword(user, f.Get("password")); err != nil {
			a.refusePOST(w, "basic", err, "incorrect username or password")
			return
		}
		s.User = user
		if f.Get("access_type") == "offline" {
			if refresh, err = a.refreshToken(user); err != nil {
				writeOAuthError(w, http.StatusInternalServerError, "server_error", err.Error())
				return
			}
		}
	case "refresh_token":
		refresh = f.Get("refresh_token")
		user, err := a.checkRefresh(refresh)
		if err != nil {
			a.refusePOST(w, "refresh", err, "the refresh token is invalid, expired or revoked: log in again")
			return
		}
		s.User = user
	default:
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type",
			fmt.Sprintf("grant_type %q: want password or refresh_token", grant))
		return
	}
	s.Groups = a.groupsOf[s.User]
	resp, err := a.respond(s, scopes)
	if err != nil {
		writeOAuthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	resp.RefreshToken = refresh
	writeJSON(w, http.StatusOK, resp)
}

// refusePOST answers an OAuth2 request with bad credentials. 401 rather
// than RFC 6749's 400: containerd retries a 401 with the GET form, and
// every client reports it as the authentication failure it is.
func (a *Authorizer) refusePOST(w http.ResponseWriter, kind string, err error, msg string) {
	a.metrics.badCredentials.WithLabelValues(kind).Inc()
	a.log.Debug("token endpoint: bad credentials", "grant", kind, "err", err)
	writeOAuthError(w, http.StatusUnauthorized, "invalid_grant", msg)
}

// checkService refuses a request for another service's token: it could
// only be a misconfigured client, and its token would be refused anyway.
func (a *Authorizer) checkService(service string) error {
	if service != "" && service != a.cfg.Token.Service {
		return fmt.Errorf("service %q is not this registry's service %q", service, a.cfg.Token.Service)
	}
	return nil
}

// respond issues the access token for s and the scopes it may have.
func (a *Authorizer) respond(s Subject, scopes []Access) (tokenResponse, error) {
	granted := a.grant(s, scopes)
	raw, issuedAt, err := a.tokens.issue(s.User, granted)
	if err != nil {
		return tokenResponse{}, err
	}
	a.metrics.tokensIssued.Inc()
	scope := formatScopes(granted)
	a.log.Debug("token issued", "user", s.User, "addr", s.Addr, "requested", formatScopes(scopes), "granted", scope)
	return tokenResponse{
		AccessToken: raw,
		TokenType:   "Bearer",
		ExpiresIn:   int(a.cfg.Token.TTL / time.Second),
		IssuedAt:    issuedAt.UTC().Format(time.RFC3339),
		Scope:       &scope,
	}, nil
}

// refreshToken issues a refresh token for an authenticated user.
func (a *Authorizer) refreshToken(user string) (string, error) {
	if a.users == nil {
		return "", errNoHtpasswd
	}
	fp, ok := a.users.fingerprint(user)
	if !ok {
		return "", fmt.Errorf("user %q left the htpasswd file while logging in", user)
	}
	raw, err := a.tokens.issueRefresh(user, fp)
	if err == nil {
		a.metrics.tokensIssued.Inc()
	}
	return raw, err
}

// checkRefresh verifies a refresh token and that its user's password is
// the one it was issued against; it returns the user.
func (a *Authorizer) checkRefresh(raw string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("no refresh_token: %w", ErrBadCredentials)
	}
	c, err := a.tokens.verifyRefresh(raw)
	if err != nil {
		return "", err
	}
	if a.users == nil {
		return "", fmt.Errorf("refresh token for %q: %w: %w", c.Subject, errNoHtpasswd, ErrBadCredentials)
	}
	fp, ok := a.users.fingerprint(c.Subject)
	if !ok || !sameFingerprint(fp, c.Fingerprint) {
		return "", fmt.Errorf("refresh token for %q: the user was removed or changed password: %w", c.Subject, ErrBadCredentials)
	}
	return c.Subject, nil
}

// grant narrows the requested scopes to what the rules allow s. The
// registry's catalog is granted to whoever asks: the catalog lists only
// the repositories its caller may pull anyway.
func (a *Authorizer) grant(s Subject, requested []Access) []Access {
	var out []Access
	add := func(typ, name, action string) {
		i := slices.IndexFunc(out, func(x Access) bool { return x.Type == typ && x.Name == name })
		if i < 0 {
			out = append(out, Access{Type: typ, Name: name})
			i = len(out) - 1
		}
		if !slices.Contains(out[i].Actions, action) {
			out[i].Actions = append(out[i].Actions, action)
		}
	}
	s.Token = nil // the rules decide what a new token grants, not an old one
	for _, req := range requested {
		switch req.Type {
		case "repository":
			for _, act := range expandActions(req.Actions) {
				if a.Decide(s, req.Name, act).Allowed {
					add(req.Type, req.Name, string(act))
				}
			}
		case "registry":
			if req.Name == "catalog" && slices.Contains(req.Actions, "*") {
				add(req.Type, req.Name, "*")
			}
		}
	}
	return out
}

// expandActions reads a scope's actions: "*" is every action; names that
// are no action are dropped.
func expandActions(actions []string) []Action {
	var out []Action
	for _, s := range actions {
		if s == "*" {
			return allActions
		}
		if act := Action(s); slices.Contains(allActions, act) && !slices.Contains(out, act) {
			out = append(out, act)
		}
	}
	return out
}

// parseScopes reads scope parameters: each may hold several scopes
// separated by spaces (the OAuth2 form's single scope does), each
// "TYPE[(CLASS)]:NAME:ACTION[,ACTION...]". The name may contain colons;
// the type ends at the first, the actions start after the last.
func parseScopes(values []string) ([]Access, error) {
	var out []Access
	for _, v := range values {
		for _, sc := range strings.Fields(v) {
			typ, rest, ok := strings.Cut(sc, ":")
			i := strings.LastIndex(rest, ":")
			if !ok || i <= 0 {
				return nil, fmt.Errorf("scope %q: want TYPE:NAME:ACTIONS, e.g. repository:team/app:pull,push", sc)
			}
			if c := strings.IndexByte(typ, '('); c >= 0 && strings.HasSuffix(typ, ")") {
				typ = typ[:c] // "repository(plugin)": the class does not change the rules
			}
			var actions []string
			for _, act := range strings.Split(rest[i+1:], ",") {
				if act != "" {
					actions = append(actions, act)
				}
			}
			out = append(out, Access{Type: typ, Name: rest[:i], Actions: actions})
		}
	}
	return out, nil
}

// writeRegistryError writes the distribution error body GET clients parse.
func writeRegistryError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	noStore(w.Header())
	ociapi.WriteError(w, r, ociapi.Errorf(status, code, "%s", msg))
}

// writeOAuthError writes an RFC 6749 error body.
func writeOAuthError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	noStore(w.Header())
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// noStore marks an answer of the token endpoint uncacheable: tokens and
// errors about credentials are nobody's to cache (RFC 6749 5.1).
func noStore(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}
