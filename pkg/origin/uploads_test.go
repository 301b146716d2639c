package origin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// newServerOn serves an origin on d and returns both the server (to look
// at its state) and its test listener.
func newServerOn(t *testing.T, d storage.Driver, mutate ...func(*Config)) (*Server, exchange) {
	t.Helper()
	cfg := DefaultConfig()
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := New(d, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, exchange{t, ts.URL}
}

// stalledChunk is a PATCH whose body sends its first bytes and then nothing
// until release or the test's end.
type stalledChunk struct {
	pw    *io.PipeWriter
	first chan struct{} // closed once the first bytes are written (or cannot be)
	resp  chan *http.Response
	err   chan error
}

func startStalledChunk(t *testing.T, url string, first []byte, contentRange string) *stalledChunk {
	t.Helper()
	return startStalled(t, http.MethodPatch, url, first, contentRange)
}

// startStalled is startStalledChunk with another method.
func startStalled(t *testing.T, method, url string, first []byte, contentRange string) *stalledChunk {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(t.Context(), method, url, pr)
	if err != nil {
		t.Fatal(err)
	}
	if contentRange != "" {
		req.Header.Set("Content-Range", contentRange)
	}
	c := &stalledChunk{pw: pw, first: make(chan struct{}), resp: make(chan *http.Response, 1), err: make(chan error, 1)}
	// Each stalled chunk on its own connection, as separate clients are.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			c.err <- err
			return
		}
		c.resp <- resp
	}()
	go func() {
		defer close(c.first)
		_, _ = pw.Write(first)
	}()
	t.Cleanup(func() { pw.CloseWithError(io.ErrUnexpectedEOF) })
	return c
}

// finish sends rest and ends the body, returning the answer.
func (c *stalledChunk) finish(t *testing.T, rest []byte) *http.Response {
	t.Helper()
	go func() {
		<-c.first // the rest after the first bytes, not before
		_, _ = c.pw.Write(rest)
		_ = c.pw.Close()
	}()
	return c.wait(t)
}

func (c *stalledChunk) wait(t *testing.T) *http.Response {
	t.Helper()
	select {
	case resp := <-c.resp:
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	case err := <-c.err:
		t.Fatalf("stalled chunk: %v", err)
	}
	return nil
}

func startSession(e exchange, name string) string {
	e.t.Helper()
	resp := e.do("POST", "/v2/"+name+"/blobs/uploads/", nil)
	e.expect(resp, http.StatusAccepted)
	return resp.Header.Get("Location")
}

// expectCommitted checks that the upload at loc has size bytes, no more:
// nothing of a chunk that failed counts.
func (e exchange) expectCommitted(loc string, size int, when string) {
	e.t.Helper()
	resp := e.do("GET", loc, nil)
	e.expect(resp, http.StatusNoContent)
	if got, want := resp.Header.Get("Range"), fmt.Sprintf("0-%d", size-1); got != want {
		e.t.Fatalf("%s the session reports Range %q, want %s: nothing of a failed chunk counts", when, got, want)
	}
}

// pushChunked pushes content in three PATCHes and a PUT.
func (e exchange) pushChunked(name string, content []byte) digest.Digest {
	e.t.Helper()
	loc := startSession(e, name)
	third := len(content) / 3
	for _, c := range [][2]int{{0, third}, {third, 2 * third}, {2 * third, len(content)}} {
		resp := e.do("PATCH", loc, content[c[0]:c[1]], "Content-Range", fmt.Sprintf("%d-%d", c[0], c[1]-1))
		e.expect(resp, http.StatusAccepted)
		loc = resp.Header.Get("Location")
	}
	d := digest.FromBytes(content)
	e.expect(e.do("PUT", loc+"?digest="+d.String(), nil), http.StatusCreated)
	return d
}

// TestSlowUploadBodiesHoldOnlyTheirOwnSessions: more stalled chunk bodies
// than the origin once had upload locks (64, shared by hash of the upload
// id) are open while an honest client pushes a blob in chunks; the honest
// push must complete, whatever its session's id.
func TestSlowUploadBodiesHoldOnlyTheirOwnSessions(t *testing.T) {
	s, e := newServerOn(t, inmemory.New(), func(c *Config) { c.BodyTimeout = time.Hour })
	const slow = 100
	for range slow {
		loc := startSession(e, "attacker/slow")
		startStalledChunk(t, e.base+loc, []byte("x"), "")
	}
	eventually.True(t, fmt.Sprintf("the %d stalled chunks never all reached the origin", slow), func() bool {
		return s.uploads.writers() == slow
	})
	for i := range 3 {
		content := bytes.Repeat([]byte(fmt.Sprintf("honest %d ", i)), 50000)
		d := e.pushChunked("team/app", content)
		got := e.expect(e.do("GET", "/v2/team/app/blobs/"+d.String(), nil), http.StatusOK)
		if !bytes.Equal(got, content) {
			t.Fatalf("honest blob %d pulled back differs from what was pushed", i)
		}
	}
	if n := s.uploads.writers(); n != slow {
		t.Fatalf("%d chunks are being written after the honest pushes, want the %d stalled ones", n, slow)
	}
}

// TestStalledBodyIsCutAndTheSessionResumes: a chunk body that stops
// sending is cut after BodyTimeout, nothing of it counts, and the client
// can resume from the committed size and finish with a verified digest.
func TestStalledBodyIsCutAndTheSessionResumes(t *testing.T) {
	s, e := newServerOn(t, inmemory.New(), func(c *Config) { c.BodyTimeout = 300 * time.Millisecond })
	content := bytes.Repeat([]byte("resumable "), 10000)
	loc := startSession(e, "team/app")
	e.expect(e.do("PATCH", loc, content[:1000], "Content-Range", "0-999"), http.StatusAccepted)

	sc := startStalledChunk(t, e.base+loc, content[1000:1500], fmt.Sprintf("1000-%d", len(content)-1))
	select {
	case resp := <-sc.resp:
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout || errorCode(t, body) != ociapi.CodeBlobUploadInvalid {
			t.Fatalf("stalled chunk answered %d %s, want 408 %s", resp.StatusCode, body, ociapi.CodeBlobUploadInvalid)
		}
	case err := <-sc.err:
		// The origin may close the connection before the client reads
		// the answer; what counts is what the session says next.
		t.Logf("stalled chunk: %v", err)
	}
	eventually.True(t, "the stalled body was never counted in shoal_origin_body_timeouts_total", func() bool {
		return testutil.ToFloat64(s.metrics.bodyTimeouts.WithLabelValues(ociapi.Upload)) == 1
	})
	e.expectCommitted(loc, 1000, "after the cut chunk")
	resp := e.do("PATCH", loc, content[1000:], "Content-Range", fmt.Sprintf("1000-%d", len(content)-1))
	e.expect(resp, http.StatusAccepted)
	d := digest.FromBytes(content)
	// A wrong digest still leaves nothing visible.
	wrong := digest.FromString("something else")
	e.expect(e.do("PUT", resp.Header.Get("Location")+"?digest="+wrong.String(), nil), http.StatusBadRequest)
	e.expect(e.do("HEAD", "/v2/team/app/blobs/"+wrong.String(), nil), http.StatusNotFound)
	e.expect(e.do("PUT", resp.Header.Get("Location")+"?digest="+d.String(), nil), http.StatusCreated)
	if got := e.expect(e.do("GET", "/v2/team/app/blobs/"+d.String(), nil), http.StatusOK); !bytes.Equal(got, content) {
		t.Fatal("resumed blob differs from what was pushed")
	}
}

// TestConcurrentRequestsToOneSession: while a chunk is being written, a
// second chunk or the final PUT to the same session is refused at once
// with 416 and the committed size, and a DELETE wins over the chunk, which
// then cannot bring the session back.
func TestConcurrentRequestsToOneSession(t *testing.T) {
	s, e := newServerOn(t, inmemory.New(), func(c *Config) { c.BodyTimeout = time.Hour })
	content := bytes.Repeat([]byte("serialized "), 5000)
	d := digest.FromBytes(content)
	loc := startSession(e, "team/app")
	first := startStalledChunk(t, e.base+loc, content[:100], fmt.Sprintf("0-%d", len(content)/2-1))
	eventually.True(t, "the first chunk never reached the origin", func() bool { return s.uploads.writers() == 1 })

	for _, req := range []struct {
		method, target string
		body           []byte
		hdr            []string
	}{
		{"PATCH", loc, content[:10], []string{"Content-Range", "0-9"}},
		{"PATCH", loc, content[len(content)/2:], []string{"Content-Range", fmt.Sprintf("%d-%d", len(content)/2, len(content)-1)}},
		{"PUT", loc + "?digest=" + d.String(), nil, nil},
	} {
		resp := e.do(req.method, req.target, req.body, req.hdr...)
		body := e.expect(resp, http.StatusRequestedRangeNotSatisfiable)
		if code := errorCode(t, body); code != ociapi.CodeBlobUploadInvalid {
			t.Errorf("%s during another chunk: code %s, want %s", req.method, code, ociapi.CodeBlobUploadInvalid)
		}
		if got := resp.Header.Get("Range"); got != "0-0" {
			t.Errorf("%s during another chunk: Range %q, want 0-0 (nothing committed yet)", req.method, got)
		}
	}
	resp := first.finish(t, content[100:len(content)/2])
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("first chunk: %d %s", resp.StatusCode, b)
	}
	resp = e.do("PATCH", loc, content[len(content)/2:], "Content-Range", fmt.Sprintf("%d-%d", len(content)/2, len(content)-1))
	e.expect(resp, http.StatusAccepted)
	e.expect(e.do("PUT", resp.Header.Get("Location")+"?digest="+d.String(), nil), http.StatusCreated)
	if got := e.expect(e.do("GET", "/v2/team/app/blobs/"+d.String(), nil), http.StatusOK); !bytes.Equal(got, content) {
		t.Fatal("blob differs from what was pushed")
	}
	if got := testutil.ToFloat64(s.metrics.uploadConflicts); got != 3 {
		t.Errorf("shoal_origin_upload_conflicts_total = %v, want 3", got)
	}

	t.Run("DELETE during a chunk", func(t *testing.T) {
		loc := startSession(e, "team/app")
		c := startStalledChunk(t, e.base+loc, []byte("abc"), "0-5")
		eventually.True(t, "the chunk never reached the origin", func() bool { return s.uploads.writers() == 1 })
		e.expect(e.do("DELETE", loc, nil), http.StatusNoContent)
		resp := c.finish(t, []byte("def"))
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), ociapi.CodeBlobUploadUnknown) {
			t.Fatalf("chunk of a deleted session answered %d %s, want 404 %s", resp.StatusCode, body, ociapi.CodeBlobUploadUnknown)
		}
		e.expect(e.do("GET", loc, nil), http.StatusNotFound)
		eventually.True(t, "session entries left after every request ended", func() bool { return s.uploads.entries() == 0 })
	})
}

// TestUploadSessionEntriesDoNotLeak: the node's per-session entries exist
// only while requests are in flight.
func TestUploadSessionEntriesDoNotLeak(t *testing.T) {
	s, e := newServerOn(t, inmemory.New())
	for i := range 20 {
		e.pushChunked("r", []byte(fmt.Sprintf("blob %d with some bytes", i)))
	}
	eventually.True(t, "upload session entries kept after the pushes ended", func() bool { return s.uploads.entries() == 0 })
}

// TestStalledBodyBesideTheAPIIsCut: a body sent to an endpoint beside the
// registry API (the token endpoint's OAuth2 form) is under the same
// progress deadline.
func TestStalledBodyBesideTheAPIIsCut(t *testing.T) {
	s, err := New(inmemory.New(), func() Config { c := DefaultConfig(); c.BodyTimeout = 200 * time.Millisecond; return c }(),
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetAuthorizer(newTestAuthorizer(t))
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	go func() { _, _ = pw.Write([]byte("grant_type=password&username=al")) }()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.URL+"/auth/token", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	go func() {
		if resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	eventually.True(t, "a stalled token request body was never cut", func() bool {
		return testutil.ToFloat64(s.metrics.bodyTimeouts.WithLabelValues("other")) == 1
	})
}

// failingBody gives its data and, in the same read, an error: the
// client's connection broke.
type failingBody struct {
	data []byte
	err  error
}

func (b *failingBody) Read(p []byte) (int, error) {
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, b.err
}

// TestStorageFailureWinsOverABodyFailure: when the store fails a chunk and
// the request body fails too, the client is told that storage failed (503
// naming storage), not that its body was bad (400): the chunk could not
// have been stored either way, and a client that retries the same bytes at
// once only fails again.
func TestStorageFailureWinsOverABodyFailure(t *testing.T) {
	d := newFaultDriver(inmemory.New())
	s, _ := newServerOn(t, d)
	d.set(false, nil, 1) // the part opens, its first write fails
	body := &failingBody{data: bytes.Repeat([]byte("x"), 3<<20), err: fmt.Errorf("connection reset by peer")}
	_, err := s.writeChunk(t.Context(), "team/app", "0b3e1c62-9a3f-4e0b-9d1e-1f4c2b7a8e90", &uploadState{}, body, -1)
	if err == nil {
		t.Fatal("a chunk whose store write and body both failed was taken")
	}
	var oe *ociapi.Error
	if errors.As(err, &oe) {
		t.Fatalf("the client is told %d %s (%q): the body's failure won over the store's", oe.Status, oe.Code, oe.Message)
	}
	if ae := s.internalError(err); ae.Status != http.StatusServiceUnavailable || !strings.Contains(ae.Message, "storage backend") {
		t.Fatalf("the client is told %d %q for %v; want 503 naming storage", ae.Status, ae.Message, err)
	}
}
