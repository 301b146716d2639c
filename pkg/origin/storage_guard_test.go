package origin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// pathStall holds the calls of one operation on the paths containing a
// string until released, ignoring their context as a hung mount does; then
// it lets them through to the real driver. Readers it opens count their
// Close.
type pathStall struct {
	storage.Driver
	op, contains string
	entered      chan struct{} // a call is held (sent without blocking)
	release      chan struct{}
	opened       atomic.Int64
	closed       atomic.Int64
}

func newPathStall(d storage.Driver, op, contains string) *pathStall {
	return &pathStall{Driver: d, op: op, contains: contains, entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (d *pathStall) hold(op, p string) {
	if op == d.op && strings.Contains(p, d.contains) {
		select {
		case d.entered <- struct{}{}:
		default:
		}
		<-d.release
	}
}

func (d *pathStall) GetContent(ctx context.Context, p string) ([]byte, error) {
	d.hold("get_content", p)
	return d.Driver.GetContent(ctx, p)
}

func (d *pathStall) Reader(ctx context.Context, p string, off int64) (io.ReadCloser, error) {
	d.hold("reader", p)
	rc, err := d.Driver.Reader(ctx, p, off)
	if err != nil {
		return nil, err
	}
	d.opened.Add(1)
	return &countedCloser{ReadCloser: rc, closed: &d.closed}, nil
}

type countedCloser struct {
	io.ReadCloser
	closed *atomic.Int64
}

func (c *countedCloser) Close() error {
	c.closed.Add(1)
	return c.ReadCloser.Close()
}

// TestStalledCallHoldsUpNoOtherCall: a storage call stuck in its driver
// (within storageTimeout, so storage does not count as out yet) keeps its
// request waiting, and only that one: requests for other paths are served
// meanwhile, and the stuck one completes once storage answers.
func TestStalledCallHoldsUpNoOtherCall(t *testing.T) {
	d := newPathStall(inmemory.New(), "get_content", "team/slow")
	_, e := newServerOn(t, d, func(c *Config) { c.StorageTimeout = time.Minute })
	slowManifest, _ := e.pushImage("team/slow", "v1", []byte("slow layer"))
	manifest, _ := e.pushImage("team/app", "v1", []byte("layer"))

	type answer struct {
		status int
		body   []byte
		err    error
	}
	slow := make(chan answer, 1)
	go func() {
		resp, err := http.Get(e.base + "/v2/team/slow/manifests/v1")
		if err != nil {
			slow <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		slow <- answer{resp.StatusCode, body, err}
	}()
	<-d.entered
	for i := range 20 {
		got := e.expect(e.do("GET", "/v2/team/app/manifests/v1", nil), http.StatusOK)
		if string(got) != string(manifest) {
			t.Fatalf("GET %d of team/app while team/slow's call is stuck: the manifest differs from the one pushed", i)
		}
	}
	select {
	case a := <-slow:
		t.Fatalf("the request whose storage call is held was answered (%d %s, %v) before storage answered", a.status, a.body, a.err)
	default:
	}
	close(d.release)
	a := <-slow
	if a.err != nil || a.status != http.StatusOK || string(a.body) != string(slowManifest) {
		t.Fatalf("the held request once storage answered: %d, %v, body %q; want 200 and the manifest pushed", a.status, a.err, a.body)
	}
}

// TestStreamOpenedAfterTimeoutIsClosed: a blob GET whose stream opens only
// after storageTimeout gets 503 naming storage; the stream that the driver
// opens later, with nobody left to read it, is closed.
func TestStreamOpenedAfterTimeoutIsClosed(t *testing.T) {
	d := newPathStall(inmemory.New(), "reader", "/blobs/")
	_, e := newServerOn(t, d, func(c *Config) { c.StorageTimeout = 100 * time.Millisecond })
	blob := []byte("a blob read too late")
	e.pushBlob("team/app", blob)

	expectUnavailable(e, e.do("GET", "/v2/team/app/blobs/"+digest.FromBytes(blob).String(), nil), "blob GET with its stream stuck opening", "inmemory")
	close(d.release)
	eventually.True(t, "the stream opened after the request was answered to be closed", func() bool {
		return d.opened.Load() == 1 && d.closed.Load() == 1
	})
}

// TestCancelledRequestStopsWaitingForStalledCall: a request whose storage
// calls go to workers (HTTP/2) and whose client goes away while its call
// is stuck (within storageTimeout) stops waiting for the call, and that
// does not count as storage failing; the call's worker serves again once
// storage answers.
func TestCancelledRequestStopsWaitingForStalledCall(t *testing.T) {
	d := newPathStall(inmemory.New(), "get_content", "team/slow")
	// Long enough that the call does not run out of time before the
	// cancel; the request notices the cancel within a sixteenth of it.
	s, e := newServerOn(t, d, func(c *Config) { c.StorageTimeout = 8 * time.Second })
	e.pushImage("team/slow", "v1", []byte("slow layer"))
	manifest, _ := e.pushImage("team/app", "v1", []byte("layer"))

	ctx, cancel := context.WithCancel(context.Background())
	req := http2Request(ctx, http.MethodGet, "/v2/team/slow/manifests/v1")
	w := httptest.NewRecorder()
	var returned atomic.Bool
	go func() {
		s.ServeHTTP(w, req)
		returned.Store(true)
	}()
	<-d.entered
	cancel()
	eventually.True(t, "the request to return once its context is cancelled, its storage call still stuck", returned.Load)
	if w.Code == http.StatusOK {
		t.Fatalf("the cancelled request was answered 200 although its storage call never returned")
	}
	if _, err := s.health.state(); err != nil {
		t.Fatalf("a request cancelled while its call was stuck put storage out: %v", err)
	}
	close(d.release)
	for i := range 3 {
		if got := e.expect(e.do("GET", "/v2/team/app/manifests/v1", nil), http.StatusOK); string(got) != string(manifest) {
			t.Fatalf("GET %d of team/app after the stuck call returned: the manifest differs from the one pushed", i)
		}
	}
}

// TestStorageWorkersRetireWhenIdle: the workers of a burst, the slots of
// its inline calls and their watchdog go once no call comes for
// storageWorkerIdle, and come back for the next call.
func TestStorageWorkersRetireWhenIdle(t *testing.T) {
	w := newStorageWorkers(16 * time.Millisecond)
	w.idleTicks = 3
	job := func() *pendingCall[int] {
		return &pendingCall[int]{callState: callState{ctx: context.Background()}, fctx: context.Background(),
			f: func(context.Context) (int, error) { return 1, nil }}
	}
	gone := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.all) == 0 && len(w.idle) == 0 && len(w.idleSlots) == 0 && !w.watching
	}
	for round := range 2 {
		if got := w.run(job()); got != callDone {
			t.Fatalf("round %d: a call that returns at once ended its wait with %d, want %d (done)", round, got, callDone)
		}
		if got := w.runInline(job()); got != callDone {
			t.Fatalf("round %d: an inline call that returns at once ended with %d, want %d (done)", round, got, callDone)
		}
		eventually.True(t, "the idle worker, the idle slot and the watchdog to go", gone)
	}
}

// http2Request is a request as it reaches the handler over HTTP/2.
func http2Request(ctx context.Context, method, target string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, method, target, nil)
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
	return req
}

// TestStalledManifestCallIsAnsweredInItsPlace: a manifest GET or HEAD over
// HTTP/1 runs its storage calls on its own goroutine; when one stalls past
// storageTimeout, the request gets its 503 naming storage all the same,
// complete and with the connection to be closed, while the call is still
// stuck, and storage counts as out. Once the call returns, the request's
// goroutine writes nothing more.
func TestStalledManifestCallIsAnsweredInItsPlace(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		t.Run(method, func(t *testing.T) {
			d := newPathStall(inmemory.New(), "get_content", "team/slow")
			s, e := newServerOn(t, d, func(c *Config) { c.StorageTimeout = 100 * time.Millisecond })
			e.pushImage("team/slow", "v1", []byte("slow layer"))

			resp := e.do(method, "/v2/team/slow/manifests/v1", nil)
			select {
			case <-d.entered:
			default:
				t.Fatal("the manifest request was answered without its storage call reaching the driver")
			}
			expectUnavailable(e, resp, method+" of a manifest whose storage call stalls", "inmemory")
			if !resp.Close {
				t.Errorf("the answer in place of the stalled request leaves the connection open (Connection: %q): the request's goroutine still holds it", resp.Header.Get("Connection"))
			}
			if _, err := s.health.state(); err == nil {
				t.Error("storage does not count as out after a call got no answer within storageTimeout")
			}
			close(d.release)
		})
	}
}

// TestStalledCallOverHTTP2IsAnswered: over HTTP/2, where only a returning
// handler ends its response, a manifest request's storage calls go to a
// worker, and the request answers 503 itself when one stalls.
func TestStalledCallOverHTTP2IsAnswered(t *testing.T) {
	d := newPathStall(inmemory.New(), "get_content", "team/slow")
	s, e := newServerOn(t, d, func(c *Config) { c.StorageTimeout = 100 * time.Millisecond })
	e.pushImage("team/slow", "v1", []byte("slow layer"))
	defer close(d.release)

	w := httptest.NewRecorder()
	s.ServeHTTP(w, http2Request(context.Background(), http.MethodGet, "/v2/team/slow/manifests/v1"))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "storage backend inmemory") {
		t.Fatalf("HTTP/2 manifest GET whose storage call stalls: %d %s, want 503 naming storage inmemory", w.Code, w.Body)
	}
	if w.Header().Get("Connection") != "" {
		t.Errorf("HTTP/2 answer sets Connection: %q, a header HTTP/2 forbids", w.Header().Get("Connection"))
	}
}
