package mirror

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// relayedHeaders are the origin's response headers a client may need: the
// content description, the auth challenge, paging, and the OCI extras.
var relayedHeaders = []string{
	"Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Docker-Content-Digest", "ETag",
	"WWW-Authenticate", "Link", "Retry-After", "OCI-Subject", "OCI-Filters-Applied",
	"Docker-Distribution-API-Version",
}

// forwardedHeaders are the client's request headers passed to the origin:
// credentials (the origin is the authority on access) and content
// negotiation (the four Accept types dockerd sends decide which manifest
// form comes back).
var forwardedHeaders = []string{"Authorization", "Accept", "User-Agent"}

// originRequest sends method to the origin's path (already escaped) with
// query, carrying the client's credentials and Accept headers from in.
func (s *Server) originRequest(ctx context.Context, method, path string, query url.Values, in *http.Request, extra http.Header) (*http.Response, error) {
	u := s.origin.JoinPath(path)
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("building origin request: %w", err)
	}
	if in != nil {
		for _, k := range forwardedHeaders {
			for _, v := range in.Header.Values(k) {
				req.Header.Add(k, v)
			}
		}
	}
	for k, vs := range extra {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s at the origin: %w", method, path, err)
	}
	return resp, nil
}

// copyRelayed copies the relayed headers of an origin response to dst.
func copyRelayed(dst, src http.Header) {
	for _, k := range relayedHeaders {
		if vs := src.Values(k); len(vs) > 0 {
			dst[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
		}
	}
}

// relay answers the client with the origin's response as it is: status,
// relayed headers, body (not for HEAD).
func (s *Server) relay(w http.ResponseWriter, r *http.Request, resp *http.Response) {
	copyRelayed(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		s.log.Debug("relaying origin response", "path", r.URL.Path, "err", err)
	}
}

// errOrigin is the answer when the origin cannot be reached: the client
// (dockerd) then tries its next endpoint.
func (s *Server) errOrigin(err error) *apiError {
	e := newError(http.StatusBadGateway, codeUnavailable, "the origin registry %s is unreachable", s.origin.Redacted())
	e.cause = err
	return e
}

// credentialKey identifies the client's credentials in cache keys without
// keeping them in plain text.
func credentialKey(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "-"
	}
	sum := sha256.Sum256([]byte(auth))
	return hex.EncodeToString(sum[:16])
}
