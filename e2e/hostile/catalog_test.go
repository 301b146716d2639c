package hostile_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
)

// TestCatalogFloodCostsOneWalk: _catalog once walked the whole repository
// tree for every request. Under a flood of catalog requests the origin
// walks it once (catalogTTL is an hour here, so that the count does not
// depend on how long the flood takes), every request is answered, and
// honest pushes and pulls complete.
func TestCatalogFloodCostsOneWalk(t *testing.T) {
	o := startOrigin(t, "file://"+t.TempDir(), "registry:\n  catalogTTL: 1h\n")
	c := newClient(t, o)
	var want []string
	for i := range 20 {
		repo := fmt.Sprintf("team%02d/app", i)
		c.expect(c.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+sha256Digest([]byte(repo)), []byte(repo)), http.StatusCreated, "seeding a repository")
		want = append(want, repo)
	}
	walksBefore := storageCalls(metrics(t, o), "walk")

	var wg sync.WaitGroup
	var bad sync.Map
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fc := newClient(t, o)
			for range 30 {
				a := fc.do("GET", "/v2/_catalog", nil)
				var cat struct{ Repositories []string }
				if a.status != http.StatusOK || json.Unmarshal(a.body, &cat) != nil || len(cat.Repositories) < len(want) ||
					!slices.Equal(cat.Repositories[:len(want)], want) {
					bad.Store(i, a.String())
				}
			}
		}()
	}
	c.pushImage("zz/honest", "v1", randomBytes(t, 256<<10))
	wg.Wait()
	bad.Range(func(k, v any) bool {
		t.Errorf("catalog request during the flood: %v, want 200 listing the %d repositories", v, len(want))
		return true
	})
	if n := storageCalls(metrics(t, o), "walk") - walksBefore; n != 1 {
		t.Errorf("960 catalog requests walked the repository tree %d times, want once", n)
	}
	// The honest push is listed without another walk: this node made it.
	a := c.expect(c.do("GET", "/v2/_catalog", nil), http.StatusOK, "catalog after the flood")
	var cat struct{ Repositories []string }
	if err := json.Unmarshal(a.body, &cat); err != nil || !slices.Contains(cat.Repositories, "zz/honest") {
		t.Errorf("catalog after an honest push: %s, want zz/honest listed", a.body)
	}
}
