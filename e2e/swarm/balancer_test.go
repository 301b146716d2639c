package swarm_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
)

// startBalancer stands for the load balancer in front of the origin
// nodes' registry APIs in production: it sends each request to the first
// backend that accepts a connection, so that killing one origin node
// leaves the registry API up. Agents send only GET and HEAD, which are safe
// to retry on another node.
func startBalancer(t *testing.T, backends []string) string {
	t.Helper()
	targets := make([]*url.URL, len(backends))
	for i, b := range backends {
		u, err := url.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		targets[i] = u
	}
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(targets[0]) },
		Transport: failover{targets: targets, next: http.DefaultTransport},
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL
}

// failover sends a request to each target in turn until one answers.
type failover struct {
	targets []*url.URL
	next    http.RoundTripper
}

func (f failover) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return f.next.RoundTrip(req)
	}
	var errs []error
	for _, t := range f.targets {
		r := req.Clone(req.Context())
		r.URL.Scheme, r.URL.Host, r.Host = t.Scheme, t.Host, t.Host
		resp, err := f.next.RoundTrip(r)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", t.Host, err))
		if req.Context().Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}
