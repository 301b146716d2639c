package origin

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// newTestOrigin serves an origin on an in-memory driver.
func newTestOrigin(t *testing.T, mutate ...func(*Config)) (*httptest.Server, storage.Driver) {
	t.Helper()
	d := inmemory.New()
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
	return ts, d
}

type exchange struct {
	t    testing.TB
	base string
}

func (e exchange) do(method, path string, body []byte, hdr ...string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body == nil {
		req.Body = http.NoBody
		req.ContentLength = 0
	}
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

func (e exchange) expect(resp *http.Response, status int) []byte {
	e.t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, b)
	}
	return b
}

func errorCode(t testing.TB, body []byte) string {
	t.Helper()
	var eb ociapi.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) == 0 {
		t.Fatalf("error body %q is not an OCI error: %v", body, err)
	}
	return eb.Errors[0].Code
}

func (e exchange) pushBlob(name string, content []byte) digest.Digest {
	e.t.Helper()
	d := digest.FromBytes(content)
	e.expect(e.do("POST", "/v2/"+name+"/blobs/uploads/?digest="+d.String(), content), http.StatusCreated)
	return d
}

func TestChunkedUploadAcrossRequests(t *testing.T) {
	ts, _ := newTestOrigin(t)
	e := exchange{t, ts.URL}
	content := bytes.Repeat([]byte("shoal-"), 100000)
	d := digest.FromBytes(content)

	resp := e.do("POST", "/v2/team/app/blobs/uploads/", nil)
	e.expect(resp, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	if resp.Header.Get("Range") != "0-0" {
		t.Errorf("new upload Range = %q, want 0-0", resp.Header.Get("Range"))
	}
	chunks := [][2]int{{0, 250000}, {250000, 500000}, {500000, len(content)}}
	for _, c := range chunks {
		resp = e.do("PATCH", loc, content[c[0]:c[1]], "Content-Range", fmt.Sprintf("%d-%d", c[0], c[1]-1))
		e.expect(resp, http.StatusAccepted)
		if got, want := resp.Header.Get("Range"), fmt.Sprintf("0-%d", c[1]-1); got != want {
			t.Fatalf("Range after chunk = %q, want %q", got, want)
		}
		loc = resp.Header.Get("Location")
	}
	// A chunk that does not continue the upload is refused, and nothing changes.
	resp = e.do("PATCH", loc, []byte("xx"), "Content-Range", "10-11")
	e.expect(resp, http.StatusRequestedRangeNotSatisfiable)
	resp = e.do("GET", loc, nil)
	e.expect(resp, http.StatusNoContent)
	if got, want := resp.Header.Get("Range"), fmt.Sprintf("0-%d", len(content)-1); got != want {
		t.Fatalf("status Range = %q, want %q", got, want)
	}
	// A wrong digest is refused and the blob does not appear.
	wrong := digest.FromString("other")
	resp = e.do("PUT", loc+"?digest="+wrong.String(), nil)
	if code := errorCode(t, e.expect(resp, http.StatusBadRequest)); code != ociapi.CodeDigestInvalid {
		t.Fatalf("wrong digest answered %s, want %s", code, ociapi.CodeDigestInvalid)
	}
	e.expect(e.do("HEAD", "/v2/team/app/blobs/"+wrong.String(), nil), http.StatusNotFound)

	resp = e.do("PUT", loc+"?digest="+d.String(), nil)
	e.expect(resp, http.StatusCreated)
	if resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("Docker-Content-Digest = %q", resp.Header.Get("Docker-Content-Digest"))
	}
	got := e.expect(e.do("GET", "/v2/team/app/blobs/"+d.String(), nil), http.StatusOK)
	if !bytes.Equal(got, content) {
		t.Fatalf("pulled %d bytes, pushed %d, contents differ", len(got), len(content))
	}
	// The session is gone once the blob is in place.
	e.expect(e.do("GET", loc, nil), http.StatusNotFound)
}

func TestUploadResumesAfterAbandonedPartialChunk(t *testing.T) {
	ts, drv := newTestOrigin(t)
	e := exchange{t, ts.URL}
	content := []byte(strings.Repeat("abcdefgh", 4096))
	resp := e.do("POST", "/v2/r/blobs/uploads/", nil)
	e.expect(resp, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	e.expect(e.do("PATCH", loc, content[:1000], "Content-Range", "0-999"), http.StatusAccepted)

	// Simulate a node killed mid-chunk: bytes past the committed end of
	// the part, never recorded in the state.
	id := loc[strings.LastIndexByte(loc, '/')+1:]
	st, err := (&Server{driver: drv}).loadUploadState(t.Context(), "r", id)
	if err != nil {
		t.Fatal(err)
	}
	w, err := drv.Writer(t.Context(), uploadPartPath("r", id, st.Parts[0].Name), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("garbage from a dead writer")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}

	e.expect(e.do("PATCH", loc, content[1000:], "Content-Range", fmt.Sprintf("1000-%d", len(content)-1)), http.StatusAccepted)
	d := digest.FromBytes(content)
	e.expect(e.do("PUT", loc+"?digest="+d.String(), nil), http.StatusCreated)
	got := e.expect(e.do("GET", "/v2/r/blobs/"+d.String(), nil), http.StatusOK)
	if !bytes.Equal(got, content) {
		t.Fatal("blob assembled after an abandoned chunk differs from what was pushed")
	}
}

func TestSHA512Blob(t *testing.T) {
	ts, _ := newTestOrigin(t)
	e := exchange{t, ts.URL}
	content := []byte("sha512 content")
	sum := sha512.Sum512(content)
	d := digest.NewDigestFromEncoded(digest.SHA512, hex.EncodeToString(sum[:]))
	resp := e.do("POST", "/v2/r/blobs/uploads/", nil)
	e.expect(resp, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	e.expect(e.do("PUT", loc+"?digest="+d.String(), content), http.StatusCreated)
	if got := e.expect(e.do("GET", "/v2/r/blobs/"+d.String(), nil), http.StatusOK); !bytes.Equal(got, content) {
		t.Fatalf("got %q", got)
	}
}

func TestBlobRange(t *testing.T) {
	ts, _ := newTestOrigin(t)
	e := exchange{t, ts.URL}
	d := e.pushBlob("r", []byte("0123456789"))
	resp := e.do("GET", "/v2/r/blobs/"+d.String(), nil, "Range", "bytes=2-5")
	if got := string(e.expect(resp, http.StatusPartialContent)); got != "2345" {
		t.Fatalf("range body %q, want 2345", got)
	}
	if cr := resp.Header.Get("Content-Range"); cr != "bytes 2-5/10" {
		t.Fatalf("Content-Range %q", cr)
	}
	resp = e.do("GET", "/v2/r/blobs/"+d.String(), nil, "Range", "bytes=20-30")
	e.expect(resp, http.StatusRequestedRangeNotSatisfiable)
	if cr := resp.Header.Get("Content-Range"); cr != "bytes */10" {
		t.Fatalf("416 Content-Range %q", cr)
	}
}

func imageManifest(config, layer digest.Digest, size int) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`, config, layer, size))
}

func TestManifestLifecycle(t *testing.T) {
	ts, _ := newTestOrigin(t)
	e := exchange{t, ts.URL}
	cfg := e.pushBlob("team/app", []byte("{}"))
	layer := e.pushBlob("team/app", []byte("layer"))
	m := imageManifest(cfg, layer, 5)
	md := digest.FromBytes(m)

	resp := e.do("PUT", "/v2/team/app/manifests/v1", m, "Content-Type", mediaTypeOCIManifest)
	e.expect(resp, http.StatusCreated)
	if resp.Header.Get("Docker-Content-Digest") != md.String() {
		t.Fatalf("digest header %q, want %s", resp.Header.Get("Docker-Content-Digest"), md)
	}
	for _, ref := range []string{"v1", md.String()} {
		resp = e.do("GET", "/v2/team/app/manifests/"+ref, nil, "Accept", mediaTypeOCIManifest)
		if got := e.expect(resp, http.StatusOK); !bytes.Equal(got, m) {
			t.Fatalf("GET %s returned other bytes", ref)
		}
		if resp.Header.Get("Content-Type") != mediaTypeOCIManifest {
			t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
		}
	}
	tags := e.expect(e.do("GET", "/v2/team/app/tags/list", nil), http.StatusOK)
	if string(tags) != `{"name":"team/app","tags":["v1"]}` {
		t.Fatalf("tags list %s", tags)
	}
	cat := e.expect(e.do("GET", "/v2/_catalog", nil), http.StatusOK)
	if string(cat) != `{"repositories":["team/app"]}` {
		t.Fatalf("catalog %s", cat)
	}
	e.expect(e.do("DELETE", "/v2/team/app/manifests/"+md.String(), nil), http.StatusAccepted)
	e.expect(e.do("GET", "/v2/team/app/manifests/v1", nil), http.StatusNotFound)
	e.expect(e.do("GET", "/v2/team/app/manifests/"+md.String(), nil), http.StatusNotFound)
}

func TestManifestRejections(t *testing.T) {
	ts, _ := newTestOrigin(t)
	e := exchange{t, ts.URL}
	cfg := e.pushBlob("r", []byte("{}"))
	missing := digest.FromString("never pushed")
	cases := []struct {
		name, ref, ct string
		body          []byte
		status        int
		code          string
	}{
		{"missing layer", "v1", mediaTypeOCIManifest, imageManifest(cfg, missing, 12), 400, ociapi.CodeManifestBlobUnknown},
		{"not json", "v1", mediaTypeOCIManifest, []byte("{"), 400, ociapi.CodeManifestInvalid},
		{"schema 1", "v1", mediaTypeDockerSchema1JWS, []byte(`{"schemaVersion":1}`), 400, ociapi.CodeManifestInvalid},
		{"content type mismatch", "v1", mediaTypeOCIIndex, imageManifest(cfg, cfg, 2), 400, ociapi.CodeManifestInvalid},
		{"digest mismatch", missing.String(), mediaTypeOCIManifest, imageManifest(cfg, cfg, 2), 400, ociapi.CodeDigestInvalid},
		{"bad tag", "-bad", mediaTypeOCIManifest, imageManifest(cfg, cfg, 2), 400, ociapi.CodeManifestInvalid},
		{"bad layer digest", "v1", mediaTypeOCIManifest, []byte(`{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:zz","size":1}}`), 400, ociapi.CodeManifestInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := e.do("PUT", "/v2/r/manifests/"+c.ref, c.body, "Content-Type", c.ct)
			if code := errorCode(t, e.expect(resp, c.status)); code != c.code {
				t.Fatalf("code %s, want %s", code, c.code)
			}
		})
	}
	resp := e.do("GET", "/v2/Bad_Name/manifests/v1", nil)
	if code := errorCode(t, e.expect(resp, http.StatusBadRequest)); code != ociapi.CodeNameInvalid {
		t.Fatalf("bad name answered %s", code)
	}
}

func TestReferrers(t *testing.T) {
	ts, _ := newTestOrigin(t)
	e := exchange{t, ts.URL}
	cfg := e.pushBlob("r", []byte("{}"))
	base := imageManifest(cfg, cfg, 2)
	bd := digest.FromBytes(base)
	e.expect(e.do("PUT", "/v2/r/manifests/base", base, "Content-Type", mediaTypeOCIManifest), http.StatusCreated)
	sig := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/example.sig",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[],`+
		`"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d}}`, cfg, bd, len(base)))
	resp := e.do("PUT", "/v2/r/manifests/"+digest.FromBytes(sig).String(), sig, "Content-Type", mediaTypeOCIManifest)
	e.expect(resp, http.StatusCreated)
	if resp.Header.Get("OCI-Subject") != bd.String() {
		t.Fatalf("OCI-Subject %q", resp.Header.Get("OCI-Subject"))
	}
	body := e.expect(e.do("GET", "/v2/r/referrers/"+bd.String(), nil), http.StatusOK)
	var idx struct {
		Manifests []struct {
			Digest       string `json:"digest"`
			ArtifactType string `json:"artifactType"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != digest.FromBytes(sig).String() || idx.Manifests[0].ArtifactType != "application/example.sig" {
		t.Fatalf("referrers %s", body)
	}
	resp = e.do("GET", "/v2/r/referrers/"+bd.String()+"?artifactType=other", nil)
	body = e.expect(resp, http.StatusOK)
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" || strings.Contains(string(body), "example.sig") {
		t.Fatalf("filtered referrers %s", body)
	}
}

// outageDriver is an in-memory driver whose writes fail as an unreachable
// backend's do.
type outageDriver struct{ storage.Driver }

type outageWriter struct{ storage.FileWriter }

func (w outageWriter) Write([]byte) (int, error) {
	return 0, fmt.Errorf("writing: %w", storage.ErrUnavailable)
}

func (d outageDriver) Writer(ctx context.Context, p string, append bool) (storage.FileWriter, error) {
	w, err := d.Driver.Writer(ctx, p, append)
	if err != nil {
		return nil, err
	}
	return outageWriter{w}, nil
}

func TestStorageOutageDuringChunkIs503AndVisibleNowhere(t *testing.T) {
	d := outageDriver{inmemory.New()}
	s, err := New(d, DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	defer ts.Close()
	e := exchange{t, ts.URL}
	content := []byte("never stored")
	dg := digest.FromBytes(content)
	resp := e.do("POST", "/v2/r/blobs/uploads/?digest="+dg.String(), content)
	if code := errorCode(t, e.expect(resp, http.StatusServiceUnavailable)); code != ociapi.CodeUnavailable {
		t.Fatalf("outage answered %s, want %s", code, ociapi.CodeUnavailable)
	}
	e.expect(e.do("HEAD", "/v2/r/blobs/"+dg.String(), nil), http.StatusNotFound)
}
