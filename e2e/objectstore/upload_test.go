// Package objectstore runs Shoal's origin on real servers of each object
// store (e2e/testenv: an S3 gateway, Azurite, fake-gcs-server): upload
// sessions shared by two origin nodes, the OCI conformance suite, outages of
// the store, and registry:2 on the same bucket.
package objectstore

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// eachStore runs test on a fresh server of every object store kind, with
// the store's credentials in the environment the origins inherit.
func eachStore(t *testing.T, test func(t *testing.T, o *testenv.ObjectStore)) {
	for _, kind := range testenv.ObjectStoreKinds {
		t.Run(kind, func(t *testing.T) {
			test(t, testenv.ObjectStoreServer(t, kind))
		})
	}
}

// TestChunkedUploadAcrossTwoOrigins runs one chunked upload over two origin
// nodes sharing a bucket, alternating chunk by chunk: the session lives in
// the store, and on stores that cannot append (S3) each chunk becomes a
// part that the closing PUT assembles. Whatever the store, the blob
// appears only after the digest was verified, and a wrong digest leaves
// no blob behind.
func TestChunkedUploadAcrossTwoOrigins(t *testing.T) {
	eachStore(t, func(t *testing.T, o *testenv.ObjectStore) {
		storage := o.StorageURL("/shoal")
		a := testenv.Origin(t, storage)
		b := testenv.Origin(t, storage)
		const repo = "objectstore/chunked"

		// Chunks across S3's 5 MiB minimum part size and Azure's 4 MiB
		// append block size, and one smaller than both.
		blob := make([]byte, 6<<20+3<<20+12345)
		if _, err := rand.Read(blob); err != nil {
			t.Fatal(err)
		}
		dig := sha256Digest(blob)
		chunks := [][2]int{{0, 6 << 20}, {6 << 20, 6<<20 + 12345}, {6<<20 + 12345, len(blob)}}
		nodes := []*testenv.Server{a, b, a}

		resp := do(t, http.MethodPost, a.URL()+"/v2/"+repo+"/blobs/uploads/", nil, nil)
		wantStatus(t, resp, http.StatusAccepted, "POST on A")
		loc := location(t, a.URL(), resp)
		for i, c := range chunks {
			on := rebase(loc, nodes[i].Addr)
			resp = do(t, http.MethodPatch, on.String(), blob[c[0]:c[1]], map[string]string{
				"Content-Type":  "application/octet-stream",
				"Content-Range": fmt.Sprintf("%d-%d", c[0], c[1]-1),
			})
			what := fmt.Sprintf("PATCH chunk %d on %s", i+1, nodes[i].Addr)
			wantStatus(t, resp, http.StatusAccepted, what)
			wantRange(t, resp, c[1], what)
			loc = location(t, nodes[i].URL(), resp)
		}

		// Visible nowhere before the closing PUT.
		head := do(t, http.MethodHead, a.URL()+"/v2/"+repo+"/blobs/"+dig, nil, nil)
		wantStatus(t, head, http.StatusNotFound, "HEAD of the blob before the closing PUT")

		put := rebase(loc, b.Addr)
		q := put.Query()
		q.Set("digest", dig)
		put.RawQuery = q.Encode()
		resp = do(t, http.MethodPut, put.String(), nil, nil)
		wantStatus(t, resp, http.StatusCreated, "closing PUT on B")
		for _, s := range []*testenv.Server{a, b} {
			got := getBlob(t, s.Addr, repo, dig)
			if !bytes.Equal(got, blob) {
				t.Errorf("blob read from %s: %d bytes with digest %s, want the %d bytes uploaded (%s)", s.Addr, len(got), sha256Digest(got), len(blob), dig)
			}
		}

		// A closing PUT with the wrong digest stores no blob, under
		// either digest.
		other := blob[:7<<20]
		resp = do(t, http.MethodPost, b.URL()+"/v2/"+repo+"/blobs/uploads/", nil, nil)
		wantStatus(t, resp, http.StatusAccepted, "second POST on B")
		loc = location(t, b.URL(), resp)
		resp = do(t, http.MethodPatch, loc.String(), other, map[string]string{"Content-Type": "application/octet-stream"})
		wantStatus(t, resp, http.StatusAccepted, "PATCH of the second upload on B")
		put = rebase(location(t, b.URL(), resp), a.Addr)
		q = put.Query()
		claimed := sha256Digest([]byte("not the content"))
		q.Set("digest", claimed)
		put.RawQuery = q.Encode()
		resp = do(t, http.MethodPut, put.String(), nil, nil)
		wantStatus(t, resp, http.StatusBadRequest, "closing PUT with a wrong digest on A")
		for _, d := range []string{claimed, sha256Digest(other)} {
			head = do(t, http.MethodHead, a.URL()+"/v2/"+repo+"/blobs/"+d, nil, nil)
			wantStatus(t, head, http.StatusNotFound, "HEAD of "+d+" after the refused PUT")
		}
	})
}

// do sends one request and reads the whole body, leaving resp.Body empty
// but closed so that callers only look at status and headers.
func do(t *testing.T, method, u string, body []byte, header map[string]string) *http.Response {
	t.Helper()
	return doWith(t, http.DefaultClient, method, u, body, header)
}

// doWith is do with client c.
func doWith(t *testing.T, c *http.Client, method, u string, body []byte, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
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

// startUpload opens an upload session in repo on the origin at base, and
// returns its location and id.
func startUpload(t *testing.T, base, repo string) (*url.URL, string) {
	t.Helper()
	resp := do(t, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil, nil)
	wantStatus(t, resp, http.StatusAccepted, "POST of an upload")
	loc := location(t, base, resp)
	return loc, loc.Path[strings.LastIndexByte(loc.Path, '/')+1:]
}

// location resolves the Location header against the server's base URL.
func location(t *testing.T, base string, resp *http.Response) *url.URL {
	t.Helper()
	b, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	l, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		t.Fatalf("%s answered no usable Location (%q)", resp.Request.URL, resp.Header.Get("Location"))
	}
	return b.ResolveReference(l)
}

// rebase points u at another server.
func rebase(u *url.URL, addr string) *url.URL {
	v := *u
	v.Host = addr
	return &v
}

func getBlob(t *testing.T, addr, repo, digest string) []byte {
	t.Helper()
	resp := do(t, http.MethodGet, fmt.Sprintf("http://%s/v2/%s/blobs/%s", addr, repo, digest), nil, nil)
	wantStatus(t, resp, http.StatusOK, "GET blob "+digest+" from "+addr)
	b, _ := io.ReadAll(resp.Body)
	return b
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
