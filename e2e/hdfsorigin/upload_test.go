package hdfsorigin

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/shoal-dev/shoal/e2e/hdfs"
)

// TestChunkedUploadAcrossTwoOriginsOnHDFS starts a chunked upload on one
// origin, sends the second chunk to another origin over the same HDFS root
// and finishes on the first: upload sessions live in HDFS, not in a node.
func TestChunkedUploadAcrossTwoOriginsOnHDFS(t *testing.T) {
	c := testCluster(t)
	p := newPhases(t)
	a := startOrigin(t, c, "/two-origins")
	b := startOrigin(t, c, "/two-origins")
	p.done("start two origins")

	const repo = "hdfs/chunked"
	blob := randomBytes(5<<20+4321, 2)
	dig := digestOf(blob)
	split := int64(2<<20 + 999)

	loc := startUpload(t, a.URL(), repo)
	r := patchChunk(t, loc.String(), 0, blob[:split], "PATCH chunk 1 on A")
	loc = location(t, a.URL(), r)

	r = patchChunk(t, on(loc, b.URL()).String(), split, blob[split:], "PATCH chunk 2 on B")
	loc = location(t, b.URL(), r)

	r = send(t, http.MethodPut, withDigest(on(loc, a.URL()), dig), nil, 0, nil)
	wantStatus(t, r, http.StatusCreated, "closing PUT on A")
	if got := r.Header.Get("Docker-Content-Digest"); got != dig {
		t.Errorf("closing PUT answered Docker-Content-Digest %q, want %s", got, dig)
	}
	p.done("POST+PATCH on A, PATCH on B, PUT on A")

	wantBlob(t, a.URL(), repo, blob)
	wantBlob(t, b.URL(), repo, blob)
	p.done("GET the blob from both")
}

// TestUploadResumesOnAnotherOriginAfterSIGKILLMidChunk kills an origin while
// it streams a chunk into HDFS, then resumes the upload on another origin:
// status, the rest of the blob from the committed offset, PUT. The killed
// node's HDFS lease on the file it was writing lasts a minute; the retry
// must not depend on it (the test does not sleep, so a retry that waited
// for the lease would show in the phase times).
//
// Two cases: the killed chunk was the first (it was writing a new part
// file), and the killed chunk was appended to the part file of a chunk
// that had been committed before (A held that file's lease when it died).
func TestUploadResumesOnAnotherOriginAfterSIGKILLMidChunk(t *testing.T) {
	c := testCluster(t)
	for _, tc := range []struct {
		name      string
		committed int64
	}{
		{"killed in the first chunk", 0},
		{"killed appending to a committed part", 3<<20 + 17},
	} {
		t.Run(tc.name, func(t *testing.T) { killMidChunk(t, c, tc.committed) })
	}
}

func killMidChunk(t *testing.T, c *hdfs.Cluster, committed int64) {
	p := newPhases(t)
	root := fmt.Sprintf("/sigkill-%d", committed)
	a := startOrigin(t, c, root)
	b := startOrigin(t, c, root)
	p.done("start two origins")

	const repo = "hdfs/killed"
	blob := randomBytes(40<<20, 3)
	dig := digestOf(blob)
	loc := startUpload(t, a.URL(), repo)
	if committed > 0 {
		r := patchChunk(t, loc.String(), 0, blob[:committed], "PATCH chunk 1 on A")
		loc = location(t, a.URL(), r)
	}
	p.done("POST (and chunk 1) on A")

	// The chunk A will not finish: its body goes through a pipe, and only
	// its first 8 MiB are written before A is killed.
	chunk := blob[committed:]
	const sent = 8 << 20
	type result struct {
		r   reply
		err error
	}
	done := make(chan result, 1)
	before := rbwSizes(t, c)
	pr, pw := io.Pipe()
	go func() {
		r, err := trySend(t, http.MethodPatch, loc.String(), pr, int64(len(chunk)), chunkHeader(committed, int64(len(chunk))))
		pr.CloseWithError(errors.New("request over"))
		done <- result{r, err}
	}()
	go func() { _, _ = pw.Write(chunk[:sent]) }()
	// An append reopens the part's last block: its replica comes back
	// as being written with the committed bytes, which must not count.
	waitForHDFSWrite(t, c, before, committed%testBlockSize+1<<20, func() error {
		select {
		case res := <-done:
			done <- res
			return fmt.Errorf("the PATCH on A ended before A was killed: %v %v", res.r, res.err)
		default:
			return nil
		}
	})
	a.Kill()
	pw.CloseWithError(errors.New("origin A was killed"))
	res := <-done
	if res.err == nil {
		t.Fatalf("the PATCH whose body was cut short by killing A succeeded: %s", res.r)
	}
	t.Logf("PATCH on A ended as expected: %v", res.err)
	p.done("stream part of chunk to A, SIGKILL A")

	st := send(t, http.MethodGet, on(loc, b.URL()).String(), nil, 0, nil)
	wantStatus(t, st, http.StatusNoContent, "upload status on B after A was killed")
	wantRange(t, st, committed, "upload status on B after A was killed")
	r := patchChunk(t, on(loc, b.URL()).String(), committed, blob[committed:], "PATCH the rest on B")
	p.done("status and PATCH the rest on B")

	r = send(t, http.MethodPut, withDigest(location(t, b.URL(), r), dig), nil, 0, nil)
	wantStatus(t, r, http.StatusCreated, "closing PUT on B")
	p.done("PUT on B")

	wantBlob(t, b.URL(), repo, blob)
	p.done("GET the blob from B")
}
