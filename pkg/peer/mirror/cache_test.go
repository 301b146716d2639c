package mirror

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/internal/fakeclock"
)

// newFakeClock returns a clock tests move by hand.
func newFakeClock() *fakeclock.Clock { return fakeclock.New() }

func sizeOfString(s string) int64 { return int64(len(s)) }

func TestTTLCacheExpiresOnItsClock(t *testing.T) {
	clock := newFakeClock()
	c := newTTLCache(10*time.Second, 100, 1<<20, sizeOfString, clock.Now)
	c.Add("a", "1")
	clock.Advance(5 * time.Second)
	c.Add("b", "2")
	clock.Advance(5*time.Second - 1)
	if v, ok := c.Get("a"); !ok || v != "1" {
		t.Fatalf("a just before its TTL: %q, %v; want 1, true", v, ok)
	}
	clock.Advance(1)
	if _, ok := c.Get("a"); ok {
		t.Error("a served at its TTL")
	}
	if n := c.Len(); n != 1 {
		t.Errorf("%d entries once a expired, want 1 (b)", n)
	}
	// Adding again restarts the TTL.
	c.Add("b", "3")
	clock.Advance(9 * time.Second)
	if v, ok := c.Get("b"); !ok || v != "3" {
		t.Errorf("b re-added 9s ago: %q, %v; want 3, true", v, ok)
	}
	clock.Advance(time.Second)
	if n, b := c.Len(), c.Bytes(); n != 0 || b != 0 {
		t.Errorf("all expired: %d entries, %d bytes; want none", n, b)
	}
}

func TestTTLCacheKeepsItsByteBudget(t *testing.T) {
	clock := newFakeClock()
	value := strings.Repeat("x", 1000)
	cost := int64(len("key-00")) + int64(len(value)) + entryOverhead
	c := newTTLCache(time.Hour, 1000, 3*cost, sizeOfString, clock.Now)
	for i := range 5 {
		c.Add(fmt.Sprintf("key-%02d", i), value)
		clock.Advance(time.Second)
	}
	if n, b := c.Len(), c.Bytes(); n != 3 || b != 3*cost {
		t.Errorf("5 entries of %d bytes into %d: %d entries, %d bytes; want 3, %d", cost, 3*cost, n, b, 3*cost)
	}
	// The oldest went first.
	for i, want := range []bool{false, false, true, true, true} {
		if _, ok := c.Get(fmt.Sprintf("key-%02d", i)); ok != want {
			t.Errorf("key-%02d held: %v, want %v", i, ok, want)
		}
	}
	// A value larger than the budget is not kept, nor is what its key held.
	if c.Add("key-04", strings.Repeat("y", int(4*cost))) {
		t.Error("a value over the whole budget was stored")
	}
	if _, ok := c.Get("key-04"); ok {
		t.Error("key-04 still served its older value after a refused Add")
	}
}

func TestTTLCacheWithoutTTLIsLRU(t *testing.T) {
	clock := newFakeClock()
	c := newTTLCache(0, 2, 1<<20, sizeOfString, clock.Now)
	c.Add("a", "1")
	c.Add("b", "2")
	c.Get("a") // a is now the most recently used
	c.Add("c", "3")
	if _, ok := c.Get("b"); ok {
		t.Error("b, the least recently used, was not the one evicted")
	}
	clock.Advance(1000 * time.Hour)
	if _, ok := c.Get("a"); !ok {
		t.Error("an entry of a cache without TTL expired")
	}
}

// TestJunkAcceptHeadersDoNotGrowTheCache: a local user varying the Accept
// header with junk types, order and repeats gets the one answer cached for
// the manifest types it names; the tag cache does not grow with them.
func TestJunkAcceptHeadersDoNotGrowTheCache(t *testing.T) {
	o := newFakeOrigin(t)
	clock := newFakeClock()
	reg := prometheus.NewRegistry()
	srv := newTestMirrorWith(t, testConfig(o.URL), Options{Blobs: &fakeBlobs{}, Registerer: reg, Now: clock.Now})
	const tagPath = "/v2/team/app/manifests/latest"
	accept := func(i int) string {
		return fmt.Sprintf("application/x-junk-%d, application/vnd.oci.image.manifest.v1+json;q=0.%d, text/plain-%d, */*", i, i%10, i)
	}
	for i := range 200 {
		a := getWith(t, srv, http.MethodGet, tagPath, http.Header{"Accept": {accept(i)}})
		if a.status != http.StatusOK {
			t.Fatalf("GET %s with Accept %q: %d %s", tagPath, accept(i), a.status, a.body)
		}
	}
	if n := metricValue(t, reg, "shoal_agent_mirror_cache_entries", "cache", "tags"); n != 1 {
		t.Errorf("tag cache holds %v entries after 200 junk Accept headers, want 1", n)
	}
	if n := o.requests.Load(); n != 1 {
		t.Errorf("origin asked %d times for the same tag and manifest types, want 1", n)
	}
	if b := metricValue(t, reg, "shoal_agent_mirror_cache_bytes", "cache", "tags"); b <= float64(len(testManifest)) || b > 4096 {
		t.Errorf("tag cache reports %v bytes for one %d-byte manifest", b, len(testManifest))
	}
	// The origin was sent the reduced list, not the junk.
	if got, want := o.lastAccept(), "application/vnd.oci.image.manifest.v1+json"; got != want {
		t.Errorf("origin was sent Accept %q, want %q", got, want)
	}
	// Past TagTTL the entry is gone, and so are its bytes.
	clock.Advance(DefaultConfig().TagTTL)
	if n, b := metricValue(t, reg, "shoal_agent_mirror_cache_entries", "cache", "tags"), metricValue(t, reg, "shoal_agent_mirror_cache_bytes", "cache", "tags"); n != 0 || b != 0 {
		t.Errorf("tag cache past its TTL: %v entries, %v bytes; want none", n, b)
	}
}

// TestTagCacheKeepsItsByteBudget: many tags (one per credential, as a
// host whose users each pull) do not take more than tagCacheBytes.
func TestTagCacheKeepsItsByteBudget(t *testing.T) {
	o := newFakeOrigin(t)
	reg := prometheus.NewRegistry()
	cfg := testConfig(o.URL)
	cfg.TagCacheBytes = 4 << 10
	cfg.OfflineTagCacheBytes = 8 << 10
	srv := newTestMirrorWith(t, cfg, Options{Blobs: &fakeBlobs{}, Registerer: reg, Now: newFakeClock().Now})
	for i := range 100 {
		a := get(t, srv, http.MethodGet, "/v2/team/app/manifests/latest", fmt.Sprintf("Basic user-%d", i))
		if a.status != http.StatusOK {
			t.Fatalf("pull %d: %d %s", i, a.status, a.body)
		}
	}
	for cache, limit := range map[string]int64{"tags": cfg.TagCacheBytes, "offline_tags": cfg.OfflineTagCacheBytes} {
		b, n := metricValue(t, reg, "shoal_agent_mirror_cache_bytes", "cache", cache), metricValue(t, reg, "shoal_agent_mirror_cache_entries", "cache", cache)
		if b > float64(limit) || n == 0 || n >= 100 {
			t.Errorf("%s cache after 100 credentials: %v entries, %v bytes; want some, at most %d bytes", cache, n, b, limit)
		}
	}
}

func TestCredentialKeyIsAHash(t *testing.T) {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	if got := credentialKey(r); got != "-" {
		t.Errorf("no credentials: %q, want -", got)
	}
	secret := "Basic " + strings.Repeat("c2VjcmV0", 1000)
	r.Header.Set("Authorization", secret)
	k := credentialKey(r)
	if len(k) != 64 || strings.Contains(k, "c2VjcmV0") {
		t.Errorf("credential key %q: want the 64 hex digits of a SHA-256", k)
	}
	r.Header.Add("Authorization", "Basic b3RoZXI=")
	if credentialKey(r) == k {
		t.Error("a second Authorization header does not change the key")
	}
}
