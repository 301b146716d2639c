package origin

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// BenchmarkManifestGETAuth is the in-process half of e2e/authbench's origin
// figure: the handler's CPU per manifest GET by tag with access control off,
// with a bearer token, and with Basic credentials.
func BenchmarkManifestGETAuth(b *testing.B) {
	d := inmemory.New()
	seedRepo(openOrigin(b, d), "path2/bench")
	a := newTestAuthorizer(b)
	authed, _ := newAuthOrigin(b, d, a)
	tok := fetchToken(b, authed.URL, basic("bob", "bob-password"), "repository:path2/bench:pull")
	for _, c := range []struct {
		name, authorization string
		auth                bool
	}{
		{"off", "", false},
		{"bearer", "Bearer " + tok, true},
		{"basic", basic("bob", "bob-password"), true},
	} {
		b.Run(c.name, func(b *testing.B) {
			s, err := New(d, DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			if err != nil {
				b.Fatal(err)
			}
			if c.auth {
				s.SetAuthorizer(a)
			}
			req := httptest.NewRequest(http.MethodGet, "/v2/path2/bench/manifests/latest", nil)
			req.Header.Set("Accept", mediaTypeOCIManifest)
			if c.authorization != "" {
				req.Header.Set("Authorization", c.authorization)
			}
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				s.ServeHTTP(w, req)
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
	d := inmemory.New()
	seedRepo(openOrigin(b, d), "path2/bench")
	a := newTestAuthorizer(b)
	authed, _ := newAuthOrigin(b, d, a)
	tok := fetchToken(b, authed.URL, basic("bob", "bob-password"), "repository:path2/bench:pull")
	for _, c := range []struct {
		name, authorization string
		auth                bool
	}{
		{"off", "", false},
		{"bearer", "Bearer " + tok, true},
		{"basic", basic("bob", "bob-password"), true},
	} {
		b.Run(c.name, func(b *testing.B) {
			s, err := New(d, DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			if err != nil {
				b.Fatal(err)
			}
			if c.auth {
				s.SetAuthorizer(a)
			}
			ts := httptest.NewServer(s)
			defer ts.Close()
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, ts.URL+"/v2/path2/bench/manifests/latest", nil)
					req.Header.Set("Accept", mediaTypeOCIManifest)
					if c.authorization != "" {
						req.Header.Set("Authorization", c.authorization)
					}
					resp, err := hc.Do(req)
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
