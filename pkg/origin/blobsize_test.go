package origin

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

func limitedConfig(c *Config) {
	c.BlobSizeLimits = []BlobSizeLimit{
		{Repositories: []string{"small/**"}, MaxBlobSize: 1000},
		{Repositories: []string{"**"}, MaxBlobSize: 5000},
	}
}

// streamed sends body with no Content-Length (chunked transfer encoding),
// so that only the bytes received can tell its size.
func (e exchange) streamed(method, target string, body []byte, hdr ...string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+target, io.MultiReader(bytes.NewReader(body)))
	if err != nil {
		e.t.Fatal(err)
	}
	req.ContentLength = -1
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func expectSizeInvalid(e exchange, resp *http.Response, what string) {
	e.t.Helper()
	body := e.expect(resp, http.StatusRequestEntityTooLarge)
	if code := errorCode(e.t, body); code != ociapi.CodeSizeInvalid {
		e.t.Errorf("%s: code %s, want %s", what, code, ociapi.CodeSizeInvalid)
	}
	if !strings.Contains(string(body), "at most 1000 bytes") {
		e.t.Errorf("%s: the refusal does not say the limit: %s", what, body)
	}
}

// TestBlobSizeLimitsPerRepositoryPattern: uploads past the limit of the
// first rule matching the repository are refused with 413 SIZE_INVALID,
// before any storage call when the request says its size, as soon as the
// bytes go past it when it does not; a chunked session keeps what it had.
func TestBlobSizeLimitsPerRepositoryPattern(t *testing.T) {
	d := &countingDriver{Driver: inmemory.New()}
	s, e := newServerOn(t, d, limitedConfig)
	big := bytes.Repeat([]byte("b"), 2000)
	bigDigest := digest.FromBytes(big)

	before := d.calls.Load()
	expectSizeInvalid(e, e.do("POST", "/v2/small/app/blobs/uploads/?digest="+bigDigest.String(), big), "monolithic upload with Content-Length")
	if n := d.calls.Load() - before; n != 0 {
		t.Errorf("refusing by Content-Length made %d storage calls, want none", n)
	}
	expectSizeInvalid(e, e.streamed("POST", "/v2/small/app/blobs/uploads/?digest="+bigDigest.String(), big), "streamed monolithic upload")
	e.expect(e.do("HEAD", "/v2/small/app/blobs/"+bigDigest.String(), nil), http.StatusNotFound)

	// Chunked: the chunk that would go past the limit is refused, the
	// session keeps its committed bytes and can still finish under it.
	content := bytes.Repeat([]byte("c"), 1000)
	loc := startSession(e, "small/app")
	e.expect(e.do("PATCH", loc, content[:600], "Content-Range", "0-599"), http.StatusAccepted)
	before = d.calls.Load()
	expectSizeInvalid(e, e.do("PATCH", loc, big[:600], "Content-Range", "600-1199"), "chunk past the limit by Content-Range")
	if n := d.calls.Load() - before; n > 2 {
		t.Errorf("refusing a chunk by its Content-Range made %d storage calls, want at most the session's state read", n)
	}
	expectSizeInvalid(e, e.streamed("PATCH", loc, big[:600]), "streamed chunk past the limit")
	e.expectCommitted(loc, 600, "after the refused chunks")
	resp := e.do("PATCH", loc, content[600:], "Content-Range", "600-999")
	e.expect(resp, http.StatusAccepted)
	e.expect(e.do("PUT", resp.Header.Get("Location")+"?digest="+digest.FromBytes(content).String(), nil), http.StatusCreated)

	// Another repository goes by the next rule.
	e.pushBlob("team/app", big)
	e.expect(e.do("POST", "/v2/team/app/blobs/uploads/?digest="+digest.FromBytes(bytes.Repeat(big, 3)).String(), bytes.Repeat(big, 3)),
		http.StatusRequestEntityTooLarge)

	if got := testutil.ToFloat64(s.metrics.limitRefusals.WithLabelValues(limitBlobSize)); got != 5 {
		t.Errorf("shoal_origin_limit_refusals_total{limit=%q} = %v, want 5", limitBlobSize, got)
	}
}

func TestInvalidBlobSizeLimitsAreRefusedAtStart(t *testing.T) {
	for _, l := range []BlobSizeLimit{
		{MaxBlobSize: 10},
		{Repositories: []string{"a/["}, MaxBlobSize: 10},
		{Repositories: []string{"a/**"}},
	} {
		cfg := DefaultConfig()
		cfg.BlobSizeLimits = []BlobSizeLimit{l}
		if _, err := New(inmemory.New(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil); err == nil {
			t.Errorf("New accepted blobSizeLimits rule %+v", l)
		}
	}
}
