package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// downloadingBlobs is a P2P engine whose blobs are not cached yet: a read
// to the end is what completes them, and it records how far each was read.
type downloadingBlobs struct {
	content map[digest.Digest][]byte
	mu      sync.Mutex
	read    map[digest.Digest]int
}

func (f *downloadingBlobs) Open(_ context.Context, d digest.Digest, _ string) (Blob, error) {
	b, ok := f.content[d]
	if !ok {
		return nil, io.EOF
	}
	return &downloadingBlob{f: f, d: d, b: b}, nil
}

type downloadingBlob struct {
	f *downloadingBlobs
	d digest.Digest
	b []byte
}

func (b *downloadingBlob) Size() int64  { return int64(len(b.b)) }
func (b *downloadingBlob) Cached() bool { return false }
func (b *downloadingBlob) Close() error { return nil }
func (b *downloadingBlob) NewReader(_ context.Context, offset int64) (io.ReadCloser, error) {
	return io.NopCloser(&countingReader{r: bytes.NewReader(b.b[offset:]), add: func(n int) {
		b.f.mu.Lock()
		b.f.read[b.d] += n
		b.f.mu.Unlock()
	}}), nil
}

type countingReader struct {
	r   io.Reader
	add func(int)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.add(n)
	return n, err
}

// TestPrefetchReadsTheBlobForThoseWhoMayPullIt: the prefetch endpoint
// reads a blob through the P2P engine to its end for credentials the
// origin lets pull it, and for nobody else; its answer carries no bytes.
func TestPrefetchReadsTheBlobForThoseWhoMayPullIt(t *testing.T) {
	o := newACLOrigin(t)
	blobs := &downloadingBlobs{content: map[digest.Digest][]byte{privateBlobD: privateBlob, publicBlobD: publicBlob}, read: map[digest.Digest]int{}}
	srv := newTestMirrorWith(t, testConfig(o.URL), Options{Blobs: blobs, Now: newFakeClock().Now})
	path := PrefetchPrefix + privateRepo + "/blobs/" + privateBlobD.String()

	a := get(t, srv, http.MethodPost, path, anonymous)
	checkStatus(t, "anonymous prefetch of a private blob", a, http.StatusUnauthorized, "")
	if got, want := a.header.Get("WWW-Authenticate"), localChallenge(srv); got != want {
		t.Errorf("anonymous prefetch: challenge %q, want the origin's with the agent's realm, %q", got, want)
	}
	checkStatus(t, "bob's prefetch of a private blob", get(t, srv, http.MethodPost, path, bob), http.StatusForbidden, "")
	if n := blobs.read[privateBlobD]; n != 0 {
		t.Fatalf("refused prefetches read %d bytes of the private blob; want none", n)
	}

	a = get(t, srv, http.MethodPost, path, alice)
	if a.status != http.StatusOK {
		t.Fatalf("alice's prefetch: %d %s", a.status, a.body)
	}
	var res PrefetchResult
	if err := json.Unmarshal(a.body, &res); err != nil {
		t.Fatalf("alice's prefetch answered %q: %v", a.body, err)
	}
	if res.Digest != privateBlobD || res.Size != int64(len(privateBlob)) || res.Cached {
		t.Errorf("alice's prefetch answered %+v, want %s, %d bytes, not cached before", res, privateBlobD, len(privateBlob))
	}
	if bytes.Contains(a.body, privateBlob) {
		t.Errorf("the prefetch answer carries the blob's bytes: %q", a.body)
	}
	if n := blobs.read[privateBlobD]; n != len(privateBlob) {
		t.Errorf("alice's prefetch read %d bytes of the blob, want all %d", n, len(privateBlob))
	}
}

func TestPrefetchRefusesWhatIsNotABlobPrefetch(t *testing.T) {
	o := newACLOrigin(t)
	blobs := &downloadingBlobs{content: map[digest.Digest][]byte{publicBlobD: publicBlob}, read: map[digest.Digest]int{}}
	srv := newTestMirrorWith(t, testConfig(o.URL), Options{Blobs: blobs, Now: newFakeClock().Now})
	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodGet, PrefetchPrefix + publicRepo + "/blobs/" + publicBlobD.String(), http.StatusMethodNotAllowed, "UNSUPPORTED"},
		{http.MethodPost, PrefetchPrefix + publicRepo + "/manifests/latest", http.StatusNotFound, "UNSUPPORTED"},
		{http.MethodPost, PrefetchPrefix + publicRepo + "/blobs/sha256:abc", http.StatusBadRequest, "DIGEST_INVALID"},
		{http.MethodPost, PrefetchPrefix + "Public/App/blobs/" + publicBlobD.String(), http.StatusBadRequest, "NAME_INVALID"},
		{http.MethodPost, PrefetchPrefix + "public/../private/app/blobs/" + publicBlobD.String(), http.StatusBadRequest, "NAME_INVALID"},
	} {
		checkStatus(t, c.method+" "+c.path, get(t, srv, c.method, c.path, anonymous), c.status, c.code)
	}
	if n := blobs.read[publicBlobD]; n != 0 {
		t.Errorf("refused prefetches read %d bytes; want none", n)
	}

	// Without a P2P engine the agent keeps no blobs: a prefetch is refused
	// with a reason rather than answered as done.
	proxy := newTestMirrorWith(t, testConfig(o.URL), Options{Now: newFakeClock().Now})
	checkStatus(t, "prefetch on an agent without P2P", get(t, proxy, http.MethodPost, PrefetchPrefix+publicRepo+"/blobs/"+publicBlobD.String(), anonymous), http.StatusConflict, "UNSUPPORTED")
}
