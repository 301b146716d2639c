package origin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// TestUploadSessionsPerClientAreCapped: past maxUploadSessionsPerClient
// open sessions a client gets 429 TOOMANYREQUESTS with Retry-After, and
// its monolithic pushes still go through; a session finished or canceled
// gives its slot back, and so does one finished through another node once
// the recheck finds it gone from storage.
func TestUploadSessionsPerClientAreCapped(t *testing.T) {
	d := inmemory.New()
	s, e := newServerOn(t, d, func(c *Config) { c.MaxUploadSessionsPerClient = 3 })
	now := time.Now()
	s.now = func() time.Time { return now }
	locs := []string{startSession(e, "team/app"), startSession(e, "team/app"), startSession(e, "team/other")}

	refused := func(when string) {
		t.Helper()
		resp := e.do("POST", "/v2/team/app/blobs/uploads/", nil)
		b := e.expect(resp, http.StatusTooManyRequests)
		if code := errorCode(t, b); code != ociapi.CodeTooManyRequests {
			t.Errorf("%s: code %s, want %s", when, code, ociapi.CodeTooManyRequests)
		}
		if resp.Header.Get("Retry-After") != "10" {
			t.Errorf("%s: Retry-After %q, want 10", when, resp.Header.Get("Retry-After"))
		}
	}
	refused("a 4th session")
	if got := testutil.ToFloat64(s.metrics.limitRefusals.WithLabelValues(limitUploadSessions)); got != 1 {
		t.Errorf("shoal_origin_limit_refusals_total{limit=%q} = %v, want 1", limitUploadSessions, got)
	}
	e.pushBlob("team/app", []byte("a monolithic push opens no session"))

	// Finished here: the slot is free at once.
	content := []byte("finished")
	e.expect(e.do("PUT", locs[0]+"?digest="+digestOf(content), content), http.StatusCreated)
	locs[0] = startSession(e, "team/app")
	refused("at the cap again")

	// Canceled here: free at once.
	e.expect(e.do("DELETE", locs[1], nil), http.StatusNoContent)
	locs[1] = startSession(e, "team/app")

	// Finished through another node: this one learns of it when the
	// client is at its cap and the recheck interval has passed.
	_, other := newServerOn(t, d)
	e2 := exchange{t, other.base}
	e2.expect(e2.do("PUT", locs[2]+"?digest="+digestOf(nil), nil), http.StatusCreated)
	refused("within the recheck interval of the last refusal")
	now = now.Add(uploadCapRecheck)
	startSession(e, "team/app")
	if n := s.openUploads.count(); n != 3 {
		t.Errorf("%d sessions counted, want 3", n)
	}
}

func digestOf(b []byte) string { return digest.FromBytes(b).String() }

// TestUploadCapEntriesDoNotLeak: a client's entry goes once it has no open
// sessions, so the map does not grow with every address ever seen.
func TestUploadCapEntriesDoNotLeak(t *testing.T) {
	s, e := newServerOn(t, inmemory.New(), func(c *Config) { c.MaxUploadSessionsPerClient = 2 })
	for range 3 {
		e.pushChunked("team/app", []byte("some bytes of a layer"))
	}
	e.expect(e.do("DELETE", startSession(e, "team/app"), nil), http.StatusNoContent)
	s.openUploads.mu.Lock()
	defer s.openUploads.mu.Unlock()
	if len(s.openUploads.byClient) != 0 || len(s.openUploads.owner) != 0 {
		t.Errorf("after every session ended, %d clients and %d sessions are still counted", len(s.openUploads.byClient), len(s.openUploads.owner))
	}
}

func TestUploadClientIsTheUserAtAnAddress(t *testing.T) {
	req := func(remote string, sub *auth.Subject) *http.Request {
		r := httptest.NewRequest("POST", "/v2/x/blobs/uploads/", nil)
		r.RemoteAddr = remote
		if sub != nil {
			r = r.WithContext(context.WithValue(r.Context(), subjectKey{}, *sub))
		}
		return r
	}
	for _, c := range []struct {
		r    *http.Request
		want string
	}{
		{req("192.0.2.1:4000", nil), "192.0.2.1"},
		{req("[::ffff:192.0.2.1]:4000", nil), "192.0.2.1"},
		{req("[2001:db8:1:2::7]:4000", nil), "2001:db8:1:2::/64"},
		{req("192.0.2.1:4000", &auth.Subject{User: "ci", Addr: netip.MustParseAddr("198.51.100.9")}), "ci@198.51.100.9"},
		{req("192.0.2.1:4000", &auth.Subject{}), "192.0.2.1"},
	} {
		if got := uploadClient(c.r); got != c.want {
			t.Errorf("request from %s (subject %v): client %q, want %q", c.r.RemoteAddr, c.r.Context().Value(subjectKey{}), got, c.want)
		}
	}
}

// TestIdleUploadSessionsStopCounting: a session no request touched for
// uploadSessionIdle stops counting against its client, so that sessions a
// client abandoned do not lock it out until GC purges them; one in use
// keeps counting.
func TestIdleUploadSessionsStopCounting(t *testing.T) {
	s, e := newServerOn(t, inmemory.New(), func(c *Config) { c.MaxUploadSessionsPerClient = 2 })
	now := time.Now()
	s.now = func() time.Time { return now }
	startSession(e, "team/app") // abandoned
	used := startSession(e, "team/app")
	e.expect(e.do("POST", "/v2/team/app/blobs/uploads/", nil), http.StatusTooManyRequests)

	now = now.Add(uploadSessionIdle - time.Minute)
	resp := e.do("PATCH", used, []byte("some bytes"), "Content-Range", "0-9")
	e.expect(resp, http.StatusAccepted)
	now = now.Add(2 * time.Minute)
	startSession(e, "team/app")
	resp = e.do("POST", "/v2/team/app/blobs/uploads/", nil)
	e.expect(resp, http.StatusTooManyRequests)
	if n := s.openUploads.count(); n != 2 {
		t.Errorf("%d sessions counted, want 2: the one in use and the new one", n)
	}
}
