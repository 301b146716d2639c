package hostile_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func unknownLayers(n int, salt string) [][2]any {
	ls := make([][2]any, n)
	for i := range ls {
		ls[i] = [2]any{sha256Digest([]byte(fmt.Sprintf("%s never pushed %d", salt, i))), 1000}
	}
	return ls
}

// TestManifestsOfUnknownLayersAreRefusedCheaply: a manifest listing
// thousands of layers nobody pushed once cost two storage calls per layer
// before its refusal. Past maxManifestReferences it now costs none; under
// it, the checks stop at the first missing layer. The storage calls are
// counted by the origin's own storage metrics. A flood of such manifests
// does not keep honest pushes from completing.
func TestManifestsOfUnknownLayersAreRefusedCheaply(t *testing.T) {
	o := startOrigin(t, "file://"+t.TempDir(), "")
	c := newClient(t, o)
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	configDigest := sha256Digest(config)
	c.expect(c.do("POST", "/v2/attacker/app/blobs/uploads/?digest="+configDigest, config), http.StatusCreated, "config push")
	const mt = "application/vnd.oci.image.manifest.v1+json"

	before := storageCalls(metrics(t, o))
	a := c.do("PUT", "/v2/attacker/app/manifests/huge", manifestOf(configDigest, len(config), unknownLayers(5000, "huge")), "Content-Type", mt)
	if a.status != http.StatusBadRequest || a.ociCode() != "MANIFEST_INVALID" || !strings.Contains(string(a.body), "maxManifestReferences") {
		t.Fatalf("manifest of 5000 unknown layers: %v, want 400 MANIFEST_INVALID naming maxManifestReferences", a)
	}
	if n := storageCalls(metrics(t, o)) - before; n != 0 {
		t.Errorf("refusing a manifest of 5000 layers, over the cap, made %d storage calls, want none", n)
	}

	before = storageCalls(metrics(t, o))
	a = c.do("PUT", "/v2/attacker/app/manifests/big", manifestOf(configDigest, len(config), unknownLayers(1000, "big")), "Content-Type", mt)
	if a.status != http.StatusBadRequest || a.ociCode() != "MANIFEST_BLOB_UNKNOWN" {
		t.Fatalf("manifest of 1000 unknown layers: %v, want 400 MANIFEST_BLOB_UNKNOWN", a)
	}
	// The config is there (two stats: its link, its data); of the layers,
	// at most manifestCheckConcurrency (16) + 1 checks of two stats each
	// start before the first miss stops them.
	if n, limit := storageCalls(metrics(t, o))-before, uint64(2+2*(16+1)); n > limit {
		t.Errorf("refusing a manifest of 1000 unknown layers made %d storage calls, want at most %d (was 2 per layer)", n, limit)
	}

	// A flood of such manifests while honest clients push.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var unexpected sync.Map
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ac := newClient(t, o)
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				a := ac.do("PUT", fmt.Sprintf("/v2/attacker/app/manifests/flood-%d-%d", i, j),
					manifestOf(configDigest, len(config), unknownLayers(1000, fmt.Sprint(i, j))), "Content-Type", mt)
				// 429 when too many are being checked at once.
				if a.status != http.StatusBadRequest && a.status != http.StatusTooManyRequests {
					unexpected.Store(a.status, a.String())
				}
			}
		}()
	}
	for i := range 3 {
		c.pushImage("team/app", fmt.Sprint("v", i), randomBytes(t, 512<<10))
	}
	close(stop)
	wg.Wait()
	unexpected.Range(func(k, v any) bool {
		t.Errorf("a flooding manifest was answered %v, want 400 or 429", v)
		return true
	})
}
