package agent

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/shoal-dev/shoal/internal/ociapi/ociapitest"
)

// TestMirrorRefusesPathsThatAreNotCanonical: the agent's HTTP listener
// hands the mirror every request as the client sent it. A path with dot
// segments, encoded separators or doubled slashes is a 400 NAME_INVALID
// with an OCI error body, not net/http's 301 to the cleaned path (whose
// Location would name another repository), and the origin is not asked.
// The agent's own endpoints are still served.
func TestMirrorRefusesPathsThatAreNotCanonical(t *testing.T) {
	// The registry API requests the origin got (the agent may fetch other
	// things from it, such as its keys, and asks /v2/ for its seeders).
	var mu sync.Mutex
	var asked []string
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.UserAgent() == checkUserAgent {
			return
		}
		if p := r.URL.EscapedPath(); strings.HasPrefix(p, "/v2") || strings.HasPrefix(p, "//") {
			mu.Lock()
			asked = append(asked, r.Method+" "+p)
			mu.Unlock()
		}
		io.WriteString(w, "{}")
	}))
	t.Cleanup(o.Close)
	a := startAgent(t, testConfig(t, o.URL, nil, nil))
	// The agent's own endpoints beside the shared cases.
	targets := append(ociapitest.NonCanonicalTargets(), "/v2/../metrics", "/v2/./")
	for _, target := range targets {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			resp, body := ociapitest.RawRequest(t, a.MirrorAddr(), m, target)
			if loc := resp.Header.Get("Location"); loc != "" || resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s %s: %d (Location %q), want 400 and no redirect", m, target, resp.StatusCode, loc)
				continue
			}
			if m == http.MethodHead {
				continue
			}
			var eb struct {
				Errors []struct{ Code, Message string } `json:"errors"`
			}
			if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) != 1 || eb.Errors[0].Code != "NAME_INVALID" {
				t.Errorf("%s %s: body %q, want an OCI error NAME_INVALID", m, target, body)
			}
		}
	}
	mu.Lock()
	if len(asked) != 0 {
		t.Errorf("the origin was asked %q for paths that are not canonical, want nothing", asked)
	}
	mu.Unlock()
	for _, p := range []string{"/healthz", "/metrics"} {
		if resp, body := ociapitest.RawRequest(t, a.MirrorAddr(), http.MethodGet, p); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d %s", p, resp.StatusCode, body)
		}
	}
	if resp, body := ociapitest.RawRequest(t, a.MirrorAddr(), http.MethodGet, "/v2/"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/: %d %s", resp.StatusCode, body)
	}
}
