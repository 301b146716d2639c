package origin

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// authBenchCase is one way a client reaches the benchmarks' origin.
type authBenchCase struct {
	name, authorization string
	srv                 *Server
}

// authBenchCases seeds path2/bench and returns an origin for each way of
// asking for it: access control off, with a bearer token, with Basic
// credentials.
func authBenchCases(b *testing.B) []authBenchCase {
	d := inmemory.New()
	seedRepo(openOrigin(b, d), "path2/bench")
	a := newTestAuthorizer(b)
	authed, _ := newAuthOrigin(b, d, a)
	tok := fetchToken(b, authed.URL, basic("bob", "bob-password"), "repository:path2/bench:pull")
	cases := []authBenchCase{{name: "off"}, {name: "bearer", authorization: "Bearer " + tok}, {name: "basic", authorization: basic("bob", "bob-password")}}
	for i := range cases {
		s, err := New(d, DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		if err != nil {
			b.Fatal(err)
		}
		if cases[i].authorization != "" {
			s.SetAuthorizer(a)
		}
		cases[i].srv = s
	}
	return cases
}

// manifestRequest is a manifest GET of path2/bench:latest to base ("" for
// the handler itself).
func (c authBenchCase) manifestRequest(base string) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, base+"/v2/path2/bench/manifests/latest", nil)
	req.Header.Set("Accept", mediaTypeOCIManifest)
	if c.authorization != "" {
		req.Header.Set("Authorization", c.authorization)
	}
	return req
}

// BenchmarkManifestGETAuth is the in-process half of e2e/authbench's origin
// figure: the handler's CPU per manifest GET by tag with access control off,
// with a bearer token, and with Basic credentials.
func BenchmarkManifestGETAuth(b *testing.B) {
	for _, c := range authBenchCases(b) {
		b.Run(c.name, func(b *testing.B) {
			req := c.manifestRequest("")
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				c.srv.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("GET answered %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkManifestGETAuthHTTP is BenchmarkManifestGETAuth over loopback
// HTTP, clients in parallel: what net/http adds for the credentials.
func BenchmarkManifestGETAuthHTTP(b *testing.B) {
	for _, c := range authBenchCases(b) {
		b.Run(c.name, func(b *testing.B) {
			ts := httptest.NewServer(c.srv)
			defer ts.Close()
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := hc.Do(c.manifestRequest(ts.URL))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("GET answered %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
