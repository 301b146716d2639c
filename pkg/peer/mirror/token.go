package mirror

import (
	"bytes"
	"context"
	"io"
	"net/http"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// maxTokenForm bounds the OAuth2 form a client POSTs to the token
// endpoint, as the origin bounds it: a few scopes and credentials.
const maxTokenForm = 64 << 10

// tokenHeaders are the token endpoint's response headers relayed besides
// relayedHeaders: tokens are nobody's to cache (RFC 6749 5.1).
var tokenHeaders = []string{"Cache-Control", "Pragma"}

// serveToken proxies the token endpoint (auth.TokenPath) to the origin's:
// GET with its query and Authorization, POST with its form, the origin's
// answer relayed as it is. The challenges the mirror relays name this
// endpoint (localChallenges), so clients fetch tokens from the host they
// pull from; the origin still issues and verifies every token.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	var body io.Reader
	extra := http.Header{}
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		// Read before the origin is asked, so that a slow client holds
		// no connection to it.
		form, err := io.ReadAll(io.LimitReader(r.Body, maxTokenForm+1))
		if err != nil {
			return // the client went away
		}
		if len(form) > maxTokenForm {
			s.writeError(w, r, ociapi.Errorf(http.StatusRequestEntityTooLarge, ociapi.CodeUnsupported,
				"the token request's form is larger than %d bytes", maxTokenForm))
			return
		}
		body = bytes.NewReader(form)
		extra.Set("Content-Type", r.Header.Get("Content-Type"))
	default:
		w.Header().Set("Allow", "GET, POST")
		s.writeError(w, r, ociapi.Errorf(http.StatusMethodNotAllowed, ociapi.CodeUnsupported,
			"the token endpoint answers GET and POST, not %s", r.Method))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.OriginTimeout)
	defer cancel()
	resp, err := s.originRequest(ctx, r.Method, auth.TokenPath, r.URL.Query(), body, r, extra)
	if e, gone := s.originFailure(r, resp, err, auth.TokenPath); e != nil {
		if !gone {
			s.writeError(w, r, e)
		}
		return
	}
	defer resp.Body.Close()
	for _, k := range tokenHeaders {
		if vs := resp.Header.Values(k); len(vs) > 0 {
			w.Header()[k] = vs
		}
	}
	s.relay(w, r, resp)
}
