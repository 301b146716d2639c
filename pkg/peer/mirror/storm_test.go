package mirror

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// stormOrigin holds team/app, eight blobs readable by alice only, and
// counts the blob HEADs it answers: the mirror's authorization calls.
type stormOrigin struct {
	*httptest.Server
	blobs map[digest.Digest][]byte
	heads atomic.Int64
}

func newStormOrigin(t *testing.T) *stormOrigin {
	t.Helper()
	o := &stormOrigin{blobs: map[digest.Digest][]byte{}}
	for i := range 8 {
		b := fmt.Appendf(nil, "layer %d of team/app", i)
		o.blobs[digest.FromBytes(b)] = b
	}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ref, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/")
		if !ok || name != "team/app" {
			originError(w, http.StatusNotFound, "NAME_UNKNOWN")
			return
		}
		if r.Method == http.MethodHead {
			o.heads.Add(1)
		}
		switch r.Header.Get("Authorization") {
		case alice:
		case anonymous:
			w.Header().Set("WWW-Authenticate", testChallenge)
			originError(w, http.StatusUnauthorized, "UNAUTHORIZED")
			return
		default:
			originError(w, http.StatusForbidden, "DENIED")
			return
		}
		b, ok := o.blobs[digest.Digest(ref)]
		if !ok {
			originError(w, http.StatusNotFound, "BLOB_UNKNOWN")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method == http.MethodGet {
			w.Write(b)
		}
	}))
	t.Cleanup(o.Close)
	return o
}

// storm sends n GETs of o's blobs at once through srv with authorization
// auth and returns the statuses and whether every 200 had the right bytes.
func (o *stormOrigin) storm(t *testing.T, srv *httptest.Server, n int, authorization string) (statuses map[int]int, wrong int) {
	t.Helper()
	var digests []digest.Digest
	for d := range o.blobs {
		digests = append(digests, d)
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	statuses = map[int]int{}
	for i := range n {
		d := digests[i%len(digests)]
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/team/app/blobs/"+d.String(), nil)
			if authorization != "" {
				req.Header.Set("Authorization", authorization)
			}
			resp, err := srv.Client().Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				statuses[-1]++
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			statuses[resp.StatusCode]++
			if resp.StatusCode == http.StatusOK && digest.FromBytes(body) != d {
				wrong++
			}
		})
	}
	wg.Wait()
	return statuses, wrong
}

// TestBlobStormAsksTheOriginOncePerRepository: a client asking at once for
// every layer of an image this host already holds costs one origin call
// per AuthTTL for the repository, not one per layer; a client the origin
// refuses is refused for every layer, and one it never answered gets
// nothing.
func TestBlobStormAsksTheOriginOncePerRepository(t *testing.T) {
	o := newStormOrigin(t)
	clock := newFakeClock()
	local := map[digest.Digest][]byte{}
	for d, b := range o.blobs {
		local[d] = b
	}
	cfg := testConfig(o.URL)
	// An origin answer that times out counts as the origin being down,
	// and each blob is then asked about on its own: under a loaded CI
	// machine the 2s of testConfig is not enough for 200 requests.
	cfg.OriginDialTimeout, cfg.OriginHeaderTimeout = time.Minute, time.Minute
	srv := newTestMirrorWith(t, cfg, Options{Blobs: &fakeBlobs{local: local}, Now: clock.Now})

	// Each blob once: the origin says each is in team/app.
	for d := range o.blobs {
		if a := get(t, srv, http.MethodGet, "/v2/team/app/blobs/"+d.String(), alice); a.status != http.StatusOK {
			t.Fatalf("alice GET %s: %d %s", d, a.status, a.body)
		}
	}
	if got := o.heads.Load(); got != int64(len(o.blobs)) {
		t.Fatalf("the first GET of each of %d blobs made %d origin HEADs, want one each", len(o.blobs), got)
	}

	for window := range 3 {
		clock.Advance(DefaultConfig().AuthTTL + 1) // every yes so far has expired
		before := o.heads.Load()
		statuses, wrong := o.storm(t, srv, 200, alice)
		if statuses[http.StatusOK] != 200 || wrong != 0 {
			t.Fatalf("window %d: alice's storm of 200 GETs: statuses %v, %d bodies with the wrong digest", window, statuses, wrong)
		}
		if got := o.heads.Load() - before; got != 1 {
			t.Errorf("window %d: alice's storm of 200 GETs of %d cached blobs made %d origin HEADs, want 1 for team/app", window, len(o.blobs), got)
		}
	}

	statuses, _ := o.storm(t, srv, 64, bob)
	if statuses[http.StatusForbidden] != 64 {
		t.Errorf("bob's storm: statuses %v, want 64 x 403 (the origin refuses him team/app)", statuses)
	}
	statuses, _ = o.storm(t, srv, 64, anonymous)
	if statuses[http.StatusUnauthorized] != 64 {
		t.Errorf("anonymous storm: statuses %v, want 64 x 401", statuses)
	}
}
