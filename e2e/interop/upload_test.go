package interop

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// TestChunkedUploadContinuesOnAnotherOrigin runs one chunked upload across
// two origin processes over the same storage: POST and the first PATCH on
// A, status and the second PATCH on B, the closing PUT on A. Upload
// sessions live in storage, so any node can continue any session.
func TestChunkedUploadContinuesOnAnotherOrigin(t *testing.T) {
	storage := "file://" + t.TempDir()
	a := testenv.Origin(t, storage)
	b := testenv.Origin(t, storage)

	blob := make([]byte, 3<<20+12345)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	dig := sha256Digest(blob)
	split := 1<<20 + 777
	const repo = "interop/chunked"

	resp := do(t, http.MethodPost, a.URL()+"/v2/"+repo+"/blobs/uploads/", nil, nil)
	wantStatus(t, resp, http.StatusAccepted, "POST on A")
	loc := location(t, a.URL(), resp)

	resp = do(t, http.MethodPatch, loc.String(), blob[:split], map[string]string{
		"Content-Type":  "application/octet-stream",
		"Content-Range": fmt.Sprintf("0-%d", split-1),
	})
	wantStatus(t, resp, http.StatusAccepted, "PATCH chunk 1 on A")
	wantRange(t, resp, split, "PATCH chunk 1 on A")
	loc = location(t, a.URL(), resp)

	onB := rebase(loc, b.Addr)
	resp = do(t, http.MethodGet, onB.String(), nil, nil)
	wantStatus(t, resp, http.StatusNoContent, "upload status on B")
	wantRange(t, resp, split, "upload status on B")

	// A chunk that does not start where the session ends is refused on
	// the other node too: B knows the session's offset from storage.
	resp = do(t, http.MethodPatch, onB.String(), blob[:10], map[string]string{
		"Content-Type":  "application/octet-stream",
		"Content-Range": "0-9",
	})
	wantStatus(t, resp, http.StatusRequestedRangeNotSatisfiable, "overlapping PATCH on B")

	resp = do(t, http.MethodPatch, onB.String(), blob[split:], map[string]string{
		"Content-Type":  "application/octet-stream",
		"Content-Range": fmt.Sprintf("%d-%d", split, len(blob)-1),
	})
	wantStatus(t, resp, http.StatusAccepted, "PATCH chunk 2 on B")
	wantRange(t, resp, len(blob), "PATCH chunk 2 on B")
	loc = rebase(location(t, b.URL(), resp), a.Addr)

	q := loc.Query()
	q.Set("digest", dig)
	loc.RawQuery = q.Encode()
	resp = do(t, http.MethodPut, loc.String(), nil, nil)
	wantStatus(t, resp, http.StatusCreated, "closing PUT on A")
	if got := resp.Header.Get("Docker-Content-Digest"); got != dig {
		t.Errorf("closing PUT answered Docker-Content-Digest %q, want %s", got, dig)
	}

	for _, s := range []*testenv.Server{a, b} {
		got := getBlob(t, s.Addr, repo, dig)
		if !bytes.Equal(got, blob) {
			t.Errorf("blob read from %s: %d bytes with digest %s, want the %d bytes uploaded (%s)", s.Addr, len(got), sha256Digest(got), len(blob), dig)
		}
	}
}

// do sends one request and reads the whole body, leaving resp.Body empty
// but closed so that callers only look at status and headers.
func do(t *testing.T, method, u string, body []byte, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

func wantStatus(t *testing.T, resp *http.Response, want int, what string) {
	t.Helper()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %s, want %d %s; body: %s", what, resp.Status, want, http.StatusText(want), b)
	}
}

func wantRange(t *testing.T, resp *http.Response, size int, what string) {
	t.Helper()
	if got, want := resp.Header.Get("Range"), "0-"+strconv.Itoa(size-1); got != want {
		t.Errorf("%s: Range header %q, want %q", what, got, want)
	}
}

// location resolves the Location header against the server's base URL,
// since the spec allows relative and absolute locations.
func location(t *testing.T, base string, resp *http.Response) *url.URL {
	t.Helper()
	loc := resp.Header.Get("Location")
	if loc == "" {
		t.Fatalf("%s answered no Location", resp.Request.URL)
	}
	b, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	l, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("bad Location %q: %v", loc, err)
	}
	return b.ResolveReference(l)
}

// rebase points u at another server.
func rebase(u *url.URL, addr string) *url.URL {
	v := *u
	v.Host = addr
	return &v
}
