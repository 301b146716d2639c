package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// quickly is how long an answer about a dead origin may take in these
// tests: far under the 2 minutes it used to take, far over the timeouts
// configured here, so a loaded machine does not make it flake.
const quickly = 20 * time.Second

// testConfig has short origin timeouts. OriginTimeout stays long, so the
// dial and header timeouts are what bound the requests under test. They
// are far under quickly, and long enough that a working origin on a
// loaded machine (a CI run, other tests' processes) answers within them:
// at 300 ms the token test failed at load 170.
func testConfig(origin string) Config {
	cfg := DefaultConfig()
	cfg.Origin = origin
	cfg.OriginDialTimeout = 2 * time.Second
	cfg.OriginHeaderTimeout = 2 * time.Second
	cfg.OriginTimeout = time.Minute
	return cfg
}

func newTestMirror(t *testing.T, cfg Config, blobs Blobs) *httptest.Server {
	t.Helper()
	return newTestMirrorWith(t, cfg, Options{Blobs: blobs})
}

func newTestMirrorWith(t *testing.T, cfg Config, opts Options) *httptest.Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return srv
}

type answer struct {
	status  int
	header  http.Header
	body    []byte
	elapsed time.Duration
}

// get sends method path to the mirror, with an Authorization header when
// auth is not empty.
func get(t *testing.T, srv *httptest.Server, method, path, auth string) answer {
	t.Helper()
	h := http.Header{}
	if auth != "" {
		h.Set("Authorization", auth)
	}
	return getWith(t, srv, method, path, h)
}

// getWith sends method path to the mirror with header.
func getWith(t *testing.T, srv *httptest.Server, method, path string, header http.Header) answer {
	t.Helper()
	// A bound, so that a regression fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	start := time.Now()
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v after %v", method, path, err, time.Since(start))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: body, elapsed: time.Since(start)}
}

// checkOriginError checks a quick answer with status and, for GET, an OCI
// error body with code UNAVAILABLE whose message holds every one of want.
func checkOriginError(t *testing.T, method, path string, a answer, status int, want ...string) {
	t.Helper()
	if a.elapsed > quickly {
		t.Errorf("%s %s: answered after %v", method, path, a.elapsed)
	}
	if a.status != status {
		t.Errorf("%s %s: status %d, want %d (body %s)", method, path, a.status, status, a.body)
	}
	if method == http.MethodHead {
		return
	}
	var body ociapi.ErrorBody
	if err := json.Unmarshal(a.body, &body); err != nil || len(body.Errors) != 1 {
		t.Errorf("%s %s: not an OCI error body: %s", method, path, a.body)
		return
	}
	e := body.Errors[0]
	if e.Code != ociapi.CodeUnavailable {
		t.Errorf("%s %s: code %s, want %s", method, path, e.Code, ociapi.CodeUnavailable)
	}
	for _, w := range want {
		if !strings.Contains(e.Message, w) {
			t.Errorf("%s %s: message %q does not mention %q", method, path, e.Message, w)
		}
	}
}

var (
	testBlob       = []byte("layer content")
	testBlobDigest = digest.FromBytes(testBlob)
	testManifest   = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	testManDigest  = digest.FromBytes(testManifest)
	otherDigest    = digest.FromString("not cached")
)

// originPaths are the requests that need the origin when nothing is cached
// (the API root, answered by the mirror itself then, is checkPing's).
var originPaths = []struct{ method, path string }{
	{http.MethodHead, "/v2/team/app/manifests/latest"},
	{http.MethodGet, "/v2/team/app/manifests/latest"},
	{http.MethodGet, "/v2/team/app/manifests/" + otherDigest.String()},
	{http.MethodGet, "/v2/team/app/tags/list"},
	{http.MethodGet, "/v2/_catalog"},
	{http.MethodHead, "/v2/team/app/blobs/" + otherDigest.String()},
	{http.MethodGet, "/v2/team/app/blobs/" + otherDigest.String()},
}

// checkPing asserts that the mirror answers the API root itself while the
// origin is down: dockerd pings it before pulling and gives up on a mirror
// whose ping fails, cached content included.
func checkPing(t *testing.T, srv *httptest.Server) {
	t.Helper()
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		a := get(t, srv, m, "/v2/", "")
		want := "{}"
		if m == http.MethodHead {
			want = ""
		}
		if a.status != http.StatusOK || string(a.body) != want || a.header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("%s /v2/ with the origin down: %d %q (API version %q), want 200 %q", m, a.status, a.body,
				a.header.Get("Docker-Distribution-API-Version"), want)
		}
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// hungListener accepts connections and never answers on them.
func hungListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func TestOriginConnectionRefused(t *testing.T) {
	origin := "http://" + closedAddr(t)
	for _, mode := range []struct {
		name  string
		blobs Blobs
	}{{"p2p", &fakeBlobs{}}, {"proxy", nil}} {
		t.Run(mode.name, func(t *testing.T) {
			srv := newTestMirror(t, testConfig(origin), mode.blobs)
			for _, p := range originPaths {
				a := get(t, srv, p.method, p.path, "")
				checkOriginError(t, p.method, p.path, a, http.StatusBadGateway, origin, "connection refused")
			}
			checkPing(t, srv)
		})
	}
}

func TestOriginHungIsBoundedByHeaderTimeout(t *testing.T) {
	origin := "http://" + hungListener(t)
	for _, mode := range []struct {
		name  string
		blobs Blobs
	}{{"p2p", &fakeBlobs{}}, {"proxy", nil}} {
		t.Run(mode.name, func(t *testing.T) {
			srv := newTestMirror(t, testConfig(origin), mode.blobs)
			for _, p := range originPaths {
				a := get(t, srv, p.method, p.path, "")
				checkOriginError(t, p.method, p.path, a, http.StatusBadGateway, origin, "originHeaderTimeout")
			}
			checkPing(t, srv)
		})
	}
}

func TestOriginTLSHandshakeHungIsBoundedByDialTimeout(t *testing.T) {
	origin := "https://" + hungListener(t)
	srv := newTestMirror(t, testConfig(origin), nil)
	for _, p := range []struct{ method, path string }{
		{http.MethodGet, "/v2/team/app/manifests/latest"},
		{http.MethodGet, "/v2/team/app/blobs/" + otherDigest.String()},
	} {
		a := get(t, srv, p.method, p.path, "")
		checkOriginError(t, p.method, p.path, a, http.StatusBadGateway, origin, "originDialTimeout")
	}
}

func TestOriginDNSFailure(t *testing.T) {
	// .invalid never resolves (RFC 2606).
	origin := "http://registry.shoal-test.invalid:5000"
	cfg := testConfig(origin)
	// Straight to the origin, whatever HTTP_PROXY says.
	tr := NewTransport(cfg, nil)
	tr.Proxy = nil
	srv := newTestMirrorWith(t, cfg, Options{Client: &http.Client{Transport: tr}})
	p := "/v2/team/app/manifests/latest"
	a := get(t, srv, http.MethodGet, p, "")
	checkOriginError(t, http.MethodGet, p, a, http.StatusBadGateway, origin, "DNS lookup of registry.shoal-test.invalid failed")
}

// fakeOrigin serves testManifest under tag latest and by digest, and
// testBlob; down makes it answer 503 with an HTML page, as a load
// balancer in front of a dead registry does; deny makes it answer 401.
type fakeOrigin struct {
	*httptest.Server
	down, deny atomic.Bool
	requests   atomic.Int64
	accept     atomic.Value // string: the Accept header of the last request
}

func (o *fakeOrigin) lastAccept() string { s, _ := o.accept.Load().(string); return s }

func newFakeOrigin(t *testing.T) *fakeOrigin {
	o := &fakeOrigin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.requests.Add(1)
		o.accept.Store(strings.Join(r.Header.Values("Accept"), ","))
		switch {
		case o.down.Load():
			w.Header().Set("Retry-After", "7")
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "<html>503 Service Temporarily Unavailable</html>")
			return
		case o.deny.Load():
			w.Header().Set("WWW-Authenticate", `Bearer realm="https://auth.example.com/token"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/v2/team/app/manifests/latest", "/v2/team/app/manifests/" + testManDigest.String():
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", testManDigest.String())
			w.Write(testManifest)
		case "/v2/team/app/blobs/" + testBlobDigest.String():
			w.Header().Set("Content-Length", strconv.Itoa(len(testBlob)))
			if r.Method == http.MethodGet {
				w.Write(testBlob)
			}
		case "/v2/team/app/tags/list":
			io.WriteString(w, `{"name":"team/app","tags":["latest"]}`)
		case "/v2/":
			io.WriteString(w, "{}")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(o.Close)
	return o
}

func TestOriginKilled(t *testing.T) {
	o := newFakeOrigin(t)
	srv := newTestMirror(t, testConfig(o.URL), &fakeBlobs{})
	if a := get(t, srv, http.MethodGet, "/v2/team/app/tags/list", ""); a.status != http.StatusOK {
		t.Fatalf("tag list with the origin up: %d %s", a.status, a.body)
	}
	// The mirror holds a kept-alive connection to the origin; the origin
	// goes away with it.
	o.CloseClientConnections()
	o.Close()
	for _, p := range originPaths {
		a := get(t, srv, p.method, p.path, "other credentials")
		checkOriginError(t, p.method, p.path, a, http.StatusBadGateway, o.URL)
	}
	checkPing(t, srv)
}

func TestOriginUnavailableStatus(t *testing.T) {
	o := newFakeOrigin(t)
	o.down.Store(true)
	for _, mode := range []struct {
		name  string
		blobs Blobs
	}{{"p2p", &fakeBlobs{}}, {"proxy", nil}} {
		t.Run(mode.name, func(t *testing.T) {
			srv := newTestMirror(t, testConfig(o.URL), mode.blobs)
			for _, p := range originPaths {
				a := get(t, srv, p.method, p.path, "")
				checkOriginError(t, p.method, p.path, a, http.StatusServiceUnavailable, o.URL, "503")
				if got := a.header.Get("Retry-After"); got != "7" {
					t.Errorf("%s %s: Retry-After %q, want the origin's 7", p.method, p.path, got)
				}
			}
			checkPing(t, srv)
		})
	}
}

func TestCachedContentServedWhileOriginDown(t *testing.T) {
	o := newFakeOrigin(t)
	blobs := &fakeBlobs{local: map[digest.Digest][]byte{testBlobDigest: testBlob}}
	cfg := testConfig(o.URL)
	clock := newFakeClock()
	srv := newTestMirrorWith(t, cfg, Options{Blobs: blobs, Now: clock.Now})
	manPath := "/v2/team/app/manifests/" + testManDigest.String()
	blobPath := "/v2/team/app/blobs/" + testBlobDigest.String()
	for _, p := range []string{manPath, blobPath} {
		if a := get(t, srv, http.MethodGet, p, "alice"); a.status != http.StatusOK {
			t.Fatalf("GET %s with the origin up: %d %s", p, a.status, a.body)
		}
	}

	// Up, the origin still decides: its 401 is not overridden by the cache.
	o.deny.Store(true)
	for _, p := range []string{manPath, blobPath} {
		if a := get(t, srv, http.MethodGet, p, "mallory"); a.status != http.StatusUnauthorized {
			t.Errorf("GET %s refused by the origin: %d, want 401", p, a.status)
		}
	}
	o.deny.Store(false)

	// Down, past AuthTTL: the mirror has to ask the origin and finds it
	// down. alice, whom the origin let read team/app, is served what this
	// agent holds of it.
	o.down.Store(true)
	clock.Advance(cfg.AuthTTL + 1) // alice's yes is not reused: only OfflineTTL's record is
	before := o.requests.Load()
	for _, c := range []struct {
		method, path string
		want         []byte
	}{
		{http.MethodGet, manPath, testManifest},
		{http.MethodHead, manPath, nil},
		{http.MethodGet, blobPath, testBlob},
		{http.MethodHead, blobPath, nil},
	} {
		a := get(t, srv, c.method, c.path, "alice")
		if a.status != http.StatusOK || !bytes.Equal(a.body, c.want) || a.elapsed > quickly {
			t.Errorf("%s %s with the origin down: %d %q after %v, want 200 %q", c.method, c.path, a.status, a.body, a.elapsed, c.want)
		}
		if c.method == http.MethodHead && a.header.Get("Content-Length") == "" {
			t.Errorf("HEAD %s: no Content-Length", c.path)
		}
	}
	// The first request found the origin down; the others did not wait on
	// it again.
	if n := o.requests.Load() - before; n != 1 {
		t.Errorf("origin asked %d times while down, want 1", n)
	}
	// bob never had the origin's yes for team/app, mallory had its no: the
	// cached bytes are not theirs to read while it cannot be asked.
	for _, who := range []string{"bob", "mallory"} {
		for _, p := range []string{manPath, blobPath} {
			a := get(t, srv, http.MethodGet, p, who)
			checkOriginError(t, http.MethodGet, p, a, http.StatusServiceUnavailable, o.URL)
		}
	}
	// What is not cached still fails, with the origin's status.
	for _, p := range []string{"/v2/team/app/blobs/" + otherDigest.String(), "/v2/team/app/manifests/latest"} {
		a := get(t, srv, http.MethodGet, p, "alice")
		checkOriginError(t, http.MethodGet, p, a, http.StatusServiceUnavailable, o.URL)
	}

	// Back up: the origin decides again.
	o.down.Store(false)
	if a := get(t, srv, http.MethodGet, "/v2/", ""); a.status != http.StatusOK {
		t.Fatalf("ping with the origin back: %d", a.status)
	}
	o.deny.Store(true)
	if a := get(t, srv, http.MethodGet, blobPath, "carol"); a.status != http.StatusUnauthorized {
		t.Errorf("blob refused by the origin once back: %d, want 401", a.status)
	}
}

func TestTagServedFromItsLastAnswerWhileOriginDown(t *testing.T) {
	o := newFakeOrigin(t)
	cfg := testConfig(o.URL)
	clock := newFakeClock()
	reg := prometheus.NewRegistry()
	srv := newTestMirrorWith(t, cfg, Options{Blobs: &fakeBlobs{}, Registerer: reg, Now: clock.Now})
	const tagPath = "/v2/team/app/manifests/latest"
	if a := get(t, srv, http.MethodGet, tagPath, "alice"); a.status != http.StatusOK || !bytes.Equal(a.body, testManifest) {
		t.Fatalf("tag with the origin up: %d %s", a.status, a.body)
	}
	o.down.Store(true)
	clock.Advance(cfg.TagTTL + 1) // the tag's answer is no longer fresh: the origin must be asked
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		a := get(t, srv, m, tagPath, "alice")
		want := testManifest
		if m == http.MethodHead {
			want = nil
		}
		if a.status != http.StatusOK || !bytes.Equal(a.body, want) || a.header.Get("Docker-Content-Digest") != testManDigest.String() {
			t.Errorf("%s tag with the origin down: %d %q digest %q, want the last answer", m, a.status, a.body, a.header.Get("Docker-Content-Digest"))
		}
	}
	if n := metricValue(t, reg, "shoal_agent_manifest_cache_requests_total", "result", "stale"); n != 2 {
		t.Errorf("stale manifest answers counted %v, want 2", n)
	}
	// Kept per credentials: bob never had the origin's answer.
	a := get(t, srv, http.MethodGet, tagPath, "bob")
	checkOriginError(t, http.MethodGet, tagPath, a, http.StatusServiceUnavailable, o.URL, "503")

	// Up again: the origin answers, not the stale copy.
	o.down.Store(false)
	before := o.requests.Load()
	if a := get(t, srv, http.MethodGet, tagPath, "alice"); a.status != http.StatusOK {
		t.Fatalf("tag with the origin back: %d %s", a.status, a.body)
	}
	if o.requests.Load() == before {
		t.Error("tag answered without asking the origin once it was back")
	}

	// Off: pulls by tag fail while the origin is down.
	cfg.OfflineTTL = 0
	off := newTestMirrorWith(t, cfg, Options{Blobs: &fakeBlobs{}, Now: clock.Now})
	if a := get(t, off, http.MethodGet, tagPath, "alice"); a.status != http.StatusOK {
		t.Fatalf("tag with the origin up: %d", a.status)
	}
	o.down.Store(true)
	clock.Advance(cfg.TagTTL + 1)
	a = get(t, off, http.MethodGet, tagPath, "alice")
	checkOriginError(t, http.MethodGet, tagPath, a, http.StatusServiceUnavailable, o.URL, "503")
}

func TestCachedContentServedWhileOriginRefuses(t *testing.T) {
	o := newFakeOrigin(t)
	blobs := &fakeBlobs{local: map[digest.Digest][]byte{testBlobDigest: testBlob}}
	cfg := testConfig(o.URL)
	clock := newFakeClock()
	srv := newTestMirrorWith(t, cfg, Options{Blobs: blobs, Now: clock.Now})
	manPath := "/v2/team/app/manifests/" + testManDigest.String()
	blobPath := "/v2/team/app/blobs/" + testBlobDigest.String()
	for _, p := range []string{manPath, blobPath} {
		if a := get(t, srv, http.MethodGet, p, ""); a.status != http.StatusOK {
			t.Fatalf("GET %s with the origin up: %d %s", p, a.status, a.body)
		}
	}
	o.CloseClientConnections()
	o.Close()
	clock.Advance(cfg.AuthTTL + 1) // the origin's yes is not reused: it must be asked
	for _, c := range []struct {
		path string
		want []byte
	}{{manPath, testManifest}, {blobPath, testBlob}} {
		a := get(t, srv, http.MethodGet, c.path, "")
		if a.status != http.StatusOK || !bytes.Equal(a.body, c.want) || a.elapsed > quickly {
			t.Errorf("GET %s with the origin gone: %d %q after %v, want 200 %q", c.path, a.status, a.body, a.elapsed, c.want)
		}
	}
}

// A blob proxied from the origin streams for longer than every origin
// timeout: only the wait for its headers is bounded. The timeouts leave a
// loaded machine time to answer the headers; the body takes three times
// as long.
func TestProxiedBlobStreamsPastTimeouts(t *testing.T) {
	const chunks = 6
	const timeout = time.Second
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(chunks*len(chunk)))
		if r.Method == http.MethodHead {
			return
		}
		w.WriteHeader(http.StatusOK)
		for range chunks {
			w.Write(chunk)
			w.(http.Flusher).Flush()
			time.Sleep(timeout / 2)
		}
	}))
	defer o.Close()
	cfg := testConfig(o.URL)
	cfg.OriginHeaderTimeout = timeout
	cfg.OriginTimeout = timeout
	srv := newTestMirror(t, cfg, nil)
	a := get(t, srv, http.MethodGet, "/v2/team/app/blobs/"+otherDigest.String(), "")
	if a.status != http.StatusOK || len(a.body) != chunks*len(chunk) {
		t.Fatalf("proxied blob: %d, %d bytes, want 200, %d bytes", a.status, len(a.body), chunks*len(chunk))
	}
}

func TestNewRejectsNonPositiveOriginTimeouts(t *testing.T) {
	for _, set := range []func(*Config){
		func(c *Config) { c.OriginTimeout = 0 },
		func(c *Config) { c.OriginDialTimeout = 0 },
		func(c *Config) { c.OriginHeaderTimeout = -time.Second },
	} {
		cfg := testConfig("http://registry.example.com")
		set(&cfg)
		if _, err := New(cfg, Options{}); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

// fakeBlobs holds complete blobs; it cannot download anything.
type fakeBlobs struct {
	local map[digest.Digest][]byte
}

func (f *fakeBlobs) Open(_ context.Context, d digest.Digest, _ string) (Blob, error) {
	b, ok := f.local[d]
	if !ok {
		return nil, errors.New("no peers and no origin seeders in this test")
	}
	return fakeBlob(b), nil
}

func (f *fakeBlobs) Local(d digest.Digest) (int64, bool) {
	b, ok := f.local[d]
	return int64(len(b)), ok
}

type fakeBlob []byte

func (b fakeBlob) Size() int64  { return int64(len(b)) }
func (b fakeBlob) Cached() bool { return true }
func (b fakeBlob) Close() error { return nil }
func (b fakeBlob) NewReader(_ context.Context, offset int64) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b[offset:])), nil
}

// timeoutErr is a net.Error that timed out, as a dial past its deadline
// returns.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestDescribeOriginError(t *testing.T) {
	s := &Server{cfg: testConfig("http://registry.example.com")}
	for _, c := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, "no connection within 2s (mirror.originDialTimeout)"},
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, "connection reset by the origin"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.EHOSTUNREACH}, "no route to the origin host"},
		{io.ErrUnexpectedEOF, "the origin closed the connection without answering"},
		{context.DeadlineExceeded, "no complete answer within 1m0s (mirror.originTimeout)"},
	} {
		err := fmt.Errorf("GET /v2/ at the origin: %w", &url.Error{Op: "Get", URL: "http://registry.example.com/v2/", Err: c.err})
		if got := s.describeOriginError(err); got != c.want {
			t.Errorf("describeOriginError(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// metricValue returns the value of the counter or gauge name whose label
// has value, 0 if there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					// The one of the two it is not reads 0.
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}
