package hdfsorigin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/hdfs"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// The registry API is driven with plain net/http so that every request
// and response the tests judge is visible in this file.

// apiClient bounds every request but the big pulls, so that an origin that
// hangs fails its test instead of eating the whole test timeout.
var apiClient = &http.Client{Timeout: 3 * time.Minute}

// reply is a response with its body read.
type reply struct {
	*http.Response
	body []byte
}

func (r reply) String() string {
	return fmt.Sprintf("%s %s -> %s %s", r.Request.Method, r.Request.URL, r.Status, bytes.TrimSpace(r.body))
}

// send sends one request with body (size bytes, -1 if unknown) and reads
// the whole response.
func send(t *testing.T, method, u string, body io.Reader, size int64, header map[string]string) reply {
	t.Helper()
	r, err := trySend(t, method, u, body, size, header)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func trySend(t *testing.T, method, u string, body io.Reader, size int64, header map[string]string) (reply, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, body)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: reading the response: %w", method, u, err)
	}
	return reply{Response: resp, body: b}, nil
}

func wantStatus(t *testing.T, r reply, want int, what string) {
	t.Helper()
	if r.StatusCode != want {
		t.Fatalf("%s: got %s, want %d %s\n%s", what, r.Status, want, http.StatusText(want), r)
	}
}

// wantRange checks an upload's Range header against the committed size.
// Like registry:2, the origin answers "0-0" for an empty upload.
func wantRange(t *testing.T, r reply, size int64, what string) {
	t.Helper()
	if got, want := r.Header.Get("Range"), fmt.Sprintf("0-%d", max(size-1, 0)); got != want {
		t.Fatalf("%s: Range %q, want %q (%d bytes committed)\n%s", what, got, want, size, r)
	}
}

// location resolves the response's Location against base.
func location(t *testing.T, base string, r reply) *url.URL {
	t.Helper()
	loc := r.Header.Get("Location")
	if loc == "" {
		t.Fatalf("no Location in %s", r)
	}
	b, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	l, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("bad Location %q in %s: %v", loc, r, err)
	}
	return b.ResolveReference(l)
}

// on points an upload location at another origin.
func on(u *url.URL, base string) *url.URL {
	b, err := url.Parse(base)
	if err != nil {
		panic(err) // base is a testenv.Server's URL
	}
	v := *u
	v.Scheme, v.Host = b.Scheme, b.Host
	return &v
}

// withDigest adds ?digest= to an upload location.
func withDigest(u *url.URL, dig string) string {
	v := *u
	q := v.Query()
	q.Set("digest", dig)
	v.RawQuery = q.Encode()
	return v.String()
}

// startUpload opens an upload session and returns its location.
func startUpload(t *testing.T, base, repo string) *url.URL {
	t.Helper()
	r := send(t, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil, 0, nil)
	wantStatus(t, r, http.StatusAccepted, "POST to start an upload on "+base)
	return location(t, base, r)
}

// chunkHeader is what a chunked PATCH of n bytes from offset sends.
func chunkHeader(offset, n int64) map[string]string {
	return map[string]string{
		"Content-Type":  "application/octet-stream",
		"Content-Range": fmt.Sprintf("%d-%d", offset, offset+n-1),
	}
}

// patchChunk sends data as the chunk at offset and wants 202 with the
// upload's new size.
func patchChunk(t *testing.T, u string, offset int64, data []byte, what string) reply {
	t.Helper()
	r := send(t, http.MethodPatch, u, bytes.NewReader(data), int64(len(data)), chunkHeader(offset, int64(len(data))))
	wantStatus(t, r, http.StatusAccepted, what)
	wantRange(t, r, offset+int64(len(data)), what)
	return r
}

// pushBlob uploads data to repo the way docker does (POST, one PATCH,
// PUT) and returns its digest.
func pushBlob(t *testing.T, base, repo string, data []byte) string {
	t.Helper()
	dig := digestOf(data)
	loc := startUpload(t, base, repo)
	r := patchChunk(t, loc.String(), 0, data, "PATCH the whole blob")
	r = send(t, http.MethodPut, withDigest(location(t, base, r), dig), nil, 0, nil)
	wantStatus(t, r, http.StatusCreated, "PUT to finish the upload")
	return dig
}

// wantBlob GETs a blob and compares it with data.
func wantBlob(t *testing.T, base, repo string, data []byte) {
	t.Helper()
	dig := digestOf(data)
	r := send(t, http.MethodGet, base+"/v2/"+repo+"/blobs/"+dig, nil, 0, nil)
	wantStatus(t, r, http.StatusOK, "GET blob "+dig)
	if got := digestOf(r.body); got != dig || !bytes.Equal(r.body, data) {
		t.Fatalf("GET %s/v2/%s/blobs/%s: %d bytes with digest %s, want the %d bytes pushed", base, repo, dig, len(r.body), got, len(data))
	}
	if got := r.Header.Get("Docker-Content-Digest"); got != dig {
		t.Errorf("GET blob %s: Docker-Content-Digest %q", dig, got)
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b) // never fails
	return b
}

// rbwSizes returns the size of every replica that a datanode of c is
// receiving ("replica being written" files), by path. It is how a test
// sees that an origin has sent bytes to HDFS before it kills it: the
// namenode does not know the length of a block under construction.
func rbwSizes(t *testing.T, c *hdfs.Cluster) map[string]int64 {
	t.Helper()
	sizes := map[string]int64{}
	err := filepath.WalkDir(c.BaseDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // a replica finalized while walking
			}
			return err
		}
		if d.IsDir() || filepath.Base(filepath.Dir(p)) != "rbw" ||
			!strings.HasPrefix(d.Name(), "blk_") || strings.HasSuffix(d.Name(), ".meta") {
			return nil
		}
		if info, err := d.Info(); err == nil {
			sizes[p] = info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listing the datanodes' replicas in %s: %v", c.BaseDir(), err)
	}
	return sizes
}

// waitForHDFSWrite waits until one replica being written holds at least n
// more bytes than it held in before (a replica reopened for append is new
// there, so n must count the bytes it had), or until failed reports a
// reason to stop waiting.
func waitForHDFSWrite(t *testing.T, c *hdfs.Cluster, before map[string]int64, n int64, failed func() error) {
	t.Helper()
	var grown string
	var most int64 // the most any replica grew, for the failure message
	if err := eventually.Wait(2*time.Minute, func() bool {
		for p, size := range rbwSizes(t, c) {
			most = max(most, size-before[p])
			if size-before[p] >= n {
				grown = fmt.Sprintf("datanode replica %s grew from %d to %d bytes", filepath.Base(p), before[p], size)
				return true
			}
		}
		if err := failed(); err != nil {
			t.Fatalf("waiting for the origin to write %d bytes to HDFS: %v", n, err)
		}
		return false
	}); err != nil {
		t.Fatalf("waiting for a datanode to receive %d bytes of the chunk: %v; the most a replica grew is %d bytes", n, err, most)
	}
	t.Log(grown)
}
