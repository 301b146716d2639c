package mirror

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// NewTransport returns the transport the mirror talks to the origin over:
// connecting (TCP, then TLS) is bounded by cfg.OriginDialTimeout and the
// wait for response headers by cfg.OriginHeaderTimeout, so a dead or hung
// origin is an error within seconds; bodies are not bounded, so blobs
// proxied from the origin stream for as long as they take. tlsConfig is
// the client TLS configuration for an https origin, nil for the defaults.
func NewTransport(cfg Config, tlsConfig *tls.Config) *http.Transport {
	dialer := &net.Dialer{Timeout: cfg.OriginDialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   cfg.OriginDialTimeout,
		ResponseHeaderTimeout: cfg.OriginHeaderTimeout,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		// As before the custom dialer: HTTP/2 to an https origin unless a
		// client TLS configuration (mTLS) is given.
		ForceAttemptHTTP2: tlsConfig == nil,
	}
}

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
// query and body (nil for none), carrying the client's credentials and
// Accept headers from in (or what extra says instead).
func (s *Server) originRequest(ctx context.Context, method, path string, query url.Values, body io.Reader, in *http.Request, extra http.Header) (*http.Response, error) {
	u := s.origin.JoinPath(path)
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
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
	// extra replaces what was forwarded under the same name; an empty
	// value removes it.
	for k, vs := range extra {
		req.Header.Del(k)
		for _, v := range vs {
			if v != "" {
				req.Header.Add(k, v)
			}
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if !errors.Is(ctx.Err(), context.Canceled) {
			// Not the client going away: the origin failed.
			s.markOriginDown()
		}
		return nil, fmt.Errorf("%s %s at the origin: %w", method, path, err)
	}
	if originUnavailableStatus(resp.StatusCode) {
		s.markOriginDown()
	} else {
		s.downUntil.Store(0)
	}
	return resp, nil
}

// originFailure is the error to answer r with once originRequest returned
// resp and err, if there is one: errOrigin when the origin could not be
// reached, errOriginStatus when it answered 502, 503 or 504 (resp is
// closed then); nil when resp is an answer to relay. gone reports a
// client that went away, which is owed no answer.
func (s *Server) originFailure(r *http.Request, resp *http.Response, err error, what string) (e *ociapi.Error, gone bool) {
	if err != nil {
		return s.errOrigin(err), r.Context().Err() != nil
	}
	if originUnavailableStatus(resp.StatusCode) {
		resp.Body.Close()
		return s.errOriginStatus(resp, r.Method, what), false
	}
	return nil, false
}

// originUnavailableStatus reports the statuses meaning the origin is not
// serving (what a load balancer in front of a dead registry answers), as
// opposed to the registry's own answers, which are relayed.
func originUnavailableStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// markOriginDown remembers for AuthTTL (at least a second) that the origin
// failed: content cached by digest is served meanwhile without waiting on
// it again.
func (s *Server) markOriginDown() {
	s.downUntil.Store(s.now().Add(max(s.cfg.AuthTTL, time.Second)).UnixNano())
}

// originDown reports whether the origin failed within AuthTTL and has not
// answered since.
func (s *Server) originDown() bool { return s.now().UnixNano() < s.downUntil.Load() }

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

// errOrigin is the answer when the origin cannot be reached: 502 with a
// message naming the origin and why, so the person reading the client's
// output knows where to look; the client (dockerd) tries its next endpoint.
func (s *Server) errOrigin(err error) *ociapi.Error {
	e := ociapi.Errorf(http.StatusBadGateway, ociapi.CodeUnavailable, "the origin registry %s is unreachable: %s",
		s.origin.Redacted(), s.describeOriginError(err))
	e.Cause = fmt.Errorf("%w: %w", errOriginDown, err)
	return e
}

// errOriginStatus is the answer when the origin (or the load balancer in
// front of it) answered 502, 503 or 504: 503 stays 503 with its
// Retry-After, the others are 502.
func (s *Server) errOriginStatus(resp *http.Response, method, what string) *ociapi.Error {
	status := http.StatusBadGateway
	if resp.StatusCode == http.StatusServiceUnavailable {
		status = http.StatusServiceUnavailable
	}
	e := ociapi.Errorf(status, ociapi.CodeUnavailable, "the origin registry %s is unavailable: it answered %q to %s of %s",
		s.origin.Redacted(), resp.Status, method, what)
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		e.Header = http.Header{"Retry-After": {ra}}
	}
	e.Cause = errOriginDown
	return e
}

// describeOriginError says in a few words why a request to the origin
// failed, naming the setting that bounded it when it timed out.
func (s *Server) describeOriginError(err error) string {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	var netErr net.Error
	var urlErr *url.Error
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("DNS lookup of %s failed (%s)", dnsErr.Name, dnsErr.Err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (is the registry running?)"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by the origin"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to the origin host"
	case errors.As(err, &opErr) && opErr.Op == "dial" && opErr.Timeout():
		return fmt.Sprintf("no connection within %s (mirror.originDialTimeout)", s.cfg.OriginDialTimeout)
	case strings.Contains(err.Error(), "TLS handshake timeout"):
		return fmt.Sprintf("TLS handshake not finished within %s (mirror.originDialTimeout)", s.cfg.OriginDialTimeout)
	case strings.Contains(err.Error(), "timeout awaiting response headers"):
		return fmt.Sprintf("no response within %s (mirror.originHeaderTimeout)", s.cfg.OriginHeaderTimeout)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("no complete answer within %s (mirror.originTimeout)", s.cfg.OriginTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the origin closed the connection without answering"
	case errors.As(err, &urlErr):
		return urlErr.Err.Error()
	}
	return err.Error()
}

// credentialKey identifies the client's credentials in cache keys: the
// SHA-256 of its Authorization header, so that no credential is kept in
// memory in plain text and every key has the same small size however long
// the header; "-" for none.
func credentialKey(r *http.Request) string {
	auth := r.Header.Values("Authorization")
	if len(auth) == 0 {
		return "-"
	}
	sum := sha256.Sum256([]byte(strings.Join(auth, "\n")))
	return hex.EncodeToString(sum[:])
}
