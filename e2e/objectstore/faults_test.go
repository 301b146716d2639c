package objectstore

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// fault is what the proxy answers instead of the store.
type fault struct {
	name   string
	status int
	header map[string]string
	body   string
}

// storeFaults are the errors each store sends when it cannot serve a
// request now: its internal error, its throttling answer, and a plain 429.
var storeFaults = map[string][]fault{
	testenv.KindS3: {
		{name: "500 InternalError", status: 500, body: s3Error("InternalError")},
		{name: "503 SlowDown", status: 503, body: s3Error("SlowDown")},
		{name: "429", status: 429, body: s3Error("TooManyRequests")},
	},
	testenv.KindAzure: {
		{name: "500 InternalError", status: 500, header: map[string]string{"x-ms-error-code": "InternalError"}, body: azureError("InternalError")},
		{name: "503 ServerBusy", status: 503, header: map[string]string{"x-ms-error-code": "ServerBusy"}, body: azureError("ServerBusy")},
		{name: "429", status: 429, header: map[string]string{"x-ms-error-code": "ServerBusy"}, body: azureError("ServerBusy")},
	},
	testenv.KindGCS: {
		{name: "500", status: 500, body: gcsError(500, "backendError")},
		{name: "503", status: 503, body: gcsError(503, "backendError")},
		{name: "429 rateLimitExceeded", status: 429, body: gcsError(429, "rateLimitExceeded")},
	},
}

func s3Error(code string) string {
	return `<?xml version="1.0" encoding="UTF-8"?><Error><Code>` + code + `</Code><Message>injected by the test</Message></Error>`
}

func azureError(code string) string {
	return `<?xml version="1.0" encoding="utf-8"?><Error><Code>` + code + `</Code><Message>injected by the test</Message></Error>`
}

func gcsError(status int, reason string) string {
	return fmt.Sprintf(`{"error":{"code":%d,"message":"injected by the test","errors":[{"reason":%q}]}}`, status, reason)
}

// faultProxy forwards requests to a store, or answers them with a fault
// while one is set.
type faultProxy struct {
	*httptest.Server
	mu      sync.Mutex
	current *fault
	// budget is how many more requests get the fault; < 0: until cleared.
	budget int
	// faulted counts the requests answered with a fault.
	faulted atomic.Int64
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &faultProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := p.take(); f != nil {
			_, _ = io.Copy(io.Discard, r.Body)
			for k, v := range f.header {
				w.Header().Set(k, v)
			}
			w.WriteHeader(f.status)
			_, _ = io.WriteString(w, f.body)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *faultProxy) take() *fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == nil || p.budget == 0 {
		return nil
	}
	if p.budget > 0 {
		p.budget--
	}
	p.faulted.Add(1)
	return p.current
}

// set makes the next n requests (all, with n < 0) get f; nil clears.
func (p *faultProxy) set(f *fault, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.current, p.budget = f, n
}

// storageURLVia is o's storage URL with the endpoint pointed at the proxy.
func storageURLVia(t *testing.T, o *testenv.ObjectStore, p *faultProxy, prefix string) string {
	t.Helper()
	u, err := url.Parse(o.StorageURL(prefix))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("endpoint", strings.Replace(o.Endpoint(), o.URL(), p.URL, 1))
	u.RawQuery = q.Encode()
	return u.String()
}

// TestStoreFaults puts a proxy between the origin and the store that
// answers with the store's error and throttling responses: while it does,
// the origin answers 503 UNAVAILABLE promptly (the SDKs' retries are
// bounded), a push stores nothing visible, and once the store answers
// again the same origin serves and stores without a restart. A fault that
// lasts only a couple of requests is absorbed by the retries.
func TestStoreFaults(t *testing.T) {
	eachStore(t, func(t *testing.T, o *testenv.ObjectStore) {
		proxy := newFaultProxy(t, o.URL())
		origin := testenv.Origin(t, storageURLVia(t, o, proxy, "/shoal"))
		const repo = "objectstore/faults"
		before := randomBlob(t, 3<<20)
		pushBlob(t, origin, repo, before, http.StatusCreated)

		for _, f := range storeFaults[o.Kind] {
			t.Run(f.name, func(t *testing.T) {
				proxy.set(&f, -1)
				start := proxy.faulted.Load()
				resp := do(t, http.MethodGet, fmt.Sprintf("%s/v2/%s/blobs/%s", origin.URL(), repo, sha256Digest(before)), nil, nil)
				wantUnavailable(t, resp, "GET of a stored blob while the store fails")
				during := randomBlob(t, 1<<20)
				pushBlob(t, origin, repo, during, http.StatusServiceUnavailable)
				tries := proxy.faulted.Load() - start
				// Each store request is tried at most 4 times (3 retries
				// on S3 and Azure, 4 attempts on GCS); the GET and the
				// push each end at their first failed storage call, which
				// makes at most two requests (the S3 driver's Stat falls
				// back from HEAD to a listing).
				if tries > 2*2*4 {
					t.Errorf("the store was asked %d times for one GET and one push, want at most 16: retries are not bounded", tries)
				}
				proxy.set(nil, 0)

				// The origin finds out by itself that the store is back
				// (its breaker lets a call through every second).
				var head *http.Response
				eventually.True(t, "the origin to answer again after the outage", func() bool {
					head = do(t, http.MethodHead, fmt.Sprintf("%s/v2/%s/blobs/%s", origin.URL(), repo, sha256Digest(during)), nil, nil)
					return head.StatusCode != http.StatusServiceUnavailable
				})
				wantStatus(t, head, http.StatusNotFound, "HEAD of the blob pushed during the outage, after it")
				if got := getBlob(t, origin.Addr, repo, sha256Digest(before)); !bytes.Equal(got, before) {
					t.Errorf("after the outage the stored blob reads as %d bytes (%s), want %d (%s)", len(got), sha256Digest(got), len(before), sha256Digest(before))
				}
				pushBlob(t, origin, repo, during, http.StatusCreated)

				// Two failed requests, then the store answers again: the
				// SDK's retries hide it.
				proxy.set(&f, 2)
				if got := getBlob(t, origin.Addr, repo, sha256Digest(during)); !bytes.Equal(got, during) {
					t.Errorf("GET through a two-request fault read %d bytes, want %d", len(got), len(during))
				}
				proxy.set(nil, 0)
			})
		}
	})
}

func randomBlob(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// pushBlob uploads blob in one POST (the spec's monolithic upload) and
// wants status.
func pushBlob(t *testing.T, origin *testenv.Server, repo string, blob []byte, want int) {
	t.Helper()
	resp := do(t, http.MethodPost, fmt.Sprintf("%s/v2/%s/blobs/uploads/?digest=%s", origin.URL(), repo, sha256Digest(blob)), blob,
		map[string]string{"Content-Type": "application/octet-stream"})
	if want == http.StatusServiceUnavailable {
		wantUnavailable(t, resp, "push while the store fails")
		return
	}
	wantStatus(t, resp, want, "push of "+sha256Digest(blob))
}

// wantUnavailable wants the origin's answer to a store outage: 503 with
// the OCI error code UNAVAILABLE.
func wantUnavailable(t *testing.T, resp *http.Response, what string) {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(b, []byte(`"UNAVAILABLE"`)) {
		t.Errorf("%s: %s %s, want 503 with code UNAVAILABLE", what, resp.Status, b)
	}
}
