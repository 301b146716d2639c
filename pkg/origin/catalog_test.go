package origin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/fakeclock"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// newTestClock returns a clock tests move by hand.
func newTestClock() *fakeclock.Clock { return fakeclock.New() }

func (e exchange) catalog(query string) []string {
	e.t.Helper()
	var cat struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.Unmarshal(e.expect(e.do("GET", "/v2/_catalog"+query, nil), http.StatusOK), &cat); err != nil {
		e.t.Fatal(err)
	}
	return cat.Repositories
}

// TestCatalogFloodWalksStorageOncePerTTL: hundreds of concurrent catalog
// requests cost one walk of the repository tree; the next walk comes only
// when the TTL has passed, and then lists what other nodes created.
func TestCatalogFloodWalksStorageOncePerTTL(t *testing.T) {
	d := &countingDriver{Driver: inmemory.New()}
	clock := newTestClock()
	s, e := newServerOn(t, d)
	s.now = clock.Now
	for _, r := range []string{"a/one", "b/two", "c/three"} {
		e.pushBlob(r, []byte(r))
	}
	want := []string{"a/one", "b/two", "c/three"}

	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(e.base + "/v2/_catalog")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var cat struct{ Repositories []string }
			if err := json.NewDecoder(resp.Body).Decode(&cat); err != nil || !slices.Equal(cat.Repositories, want) {
				t.Errorf("catalog during the flood: %v (%v), want %v", cat.Repositories, err, want)
			}
		}()
	}
	wg.Wait()
	if n := d.walks.Load(); n != 1 {
		t.Fatalf("200 catalog requests walked the repository tree %d times, want once", n)
	}

	// A repository this node creates is listed at once, without a walk.
	e.pushBlob("d/four", []byte("four"))
	if got := e.catalog(""); !slices.Equal(got, append(want, "d/four")) {
		t.Fatalf("catalog after a push on this node: %v, want d/four added", got)
	}
	// One another node created appears once the TTL has passed.
	_, other := newServerOn(t, d)
	other.pushBlob("e/five", []byte("five"))
	if n := d.walks.Load(); n != 1 {
		t.Fatalf("the tree was walked %d times before the TTL passed, want once", n)
	}
	clock.Advance(DefaultConfig().CatalogTTL)
	if got := e.catalog(""); !slices.Equal(got, []string{"a/one", "b/two", "c/three", "d/four", "e/five"}) {
		t.Fatalf("catalog after the TTL: %v, want e/five, pushed through another node, listed", got)
	}
	if n := d.walks.Load(); n != 2 {
		t.Fatalf("the tree was walked %d times after the TTL passed, want twice", n)
	}
}

// TestCatalogKeepsRepositoriesCreatedDuringAWalk: a repository this node
// creates while a walk is running is listed even if the walk missed it.
func TestCatalogKeepsRepositoriesCreatedDuringAWalk(t *testing.T) {
	s, _ := newServerOn(t, inmemory.New())
	clock := newTestClock()
	s.now = clock.Now
	start := clock.Now()
	s.catalog.add(s, "made/during")
	got := s.catalog.store([]string{"a", "z"}, start)
	if !slices.Equal(got, []string{"a", "made/during", "z"}) {
		t.Fatalf("a walk that started before a push stored %v, want the pushed repository kept", got)
	}
	clock.Advance(time.Second)
	s.catalog.store([]string{"a", "made/during", "z"}, clock.Now())
	if len(s.catalog.added) != 0 {
		t.Fatalf("%d names still remembered after a walk that saw them", len(s.catalog.added))
	}
}

// TestCatalogIsBoundedByMaxCatalogEntries: the walk stops at
// maxCatalogEntries repositories.
func TestCatalogIsBoundedByMaxCatalogEntries(t *testing.T) {
	d := inmemory.New()
	_, e := newServerOn(t, d, func(c *Config) { c.MaxCatalogEntries = 3 })
	_, other := newServerOn(t, d)
	for i := range 6 {
		other.pushBlob(fmt.Sprintf("r%d", i), []byte("x"))
	}
	if got := e.catalog(""); len(got) != 3 {
		t.Fatalf("catalog with maxCatalogEntries 3 over 6 repositories: %v, want 3 names", got)
	}
}
