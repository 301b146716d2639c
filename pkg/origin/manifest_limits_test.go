package origin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// countingDriver counts the calls made to a driver and can hold Stat calls
// (every existence check of a manifest's references is one).
type countingDriver struct {
	storage.Driver
	calls atomic.Int64
	walks atomic.Int64

	mu       sync.Mutex
	statGate chan struct{} // when not nil, Stat waits for it to close
	inStat   int
	maxStat  int
}

func (d *countingDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	d.calls.Add(1)
	return d.Driver.GetContent(ctx, p)
}

func (d *countingDriver) PutContent(ctx context.Context, p string, b []byte) error {
	d.calls.Add(1)
	return d.Driver.PutContent(ctx, p, b)
}

func (d *countingDriver) Reader(ctx context.Context, p string, off int64) (io.ReadCloser, error) {
	d.calls.Add(1)
	return d.Driver.Reader(ctx, p, off)
}

func (d *countingDriver) Writer(ctx context.Context, p string, a bool) (storage.FileWriter, error) {
	d.calls.Add(1)
	return d.Driver.Writer(ctx, p, a)
}

func (d *countingDriver) List(ctx context.Context, p string) ([]string, error) {
	d.calls.Add(1)
	return d.Driver.List(ctx, p)
}

func (d *countingDriver) Move(ctx context.Context, a, b string) error {
	d.calls.Add(1)
	return d.Driver.Move(ctx, a, b)
}

func (d *countingDriver) Delete(ctx context.Context, p string) error {
	d.calls.Add(1)
	return d.Driver.Delete(ctx, p)
}

func (d *countingDriver) Walk(ctx context.Context, p string, f storage.WalkFn, opts ...func(*storage.WalkOptions)) error {
	d.calls.Add(1)
	d.walks.Add(1)
	return d.Driver.Walk(ctx, p, f, opts...)
}

func (d *countingDriver) Stat(ctx context.Context, p string) (storage.FileInfo, error) {
	d.calls.Add(1)
	d.mu.Lock()
	gate := d.statGate
	d.inStat++
	d.maxStat = max(d.maxStat, d.inStat)
	d.mu.Unlock()
	if gate != nil {
		<-gate
	}
	defer func() {
		d.mu.Lock()
		d.inStat--
		d.mu.Unlock()
	}()
	return d.Driver.Stat(ctx, p)
}

func (d *countingDriver) statsInFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inStat
}

// manifestOf builds an OCI image manifest over config and layers.
func manifestOf(t testing.TB, config digest.Digest, layers ...digest.Digest) []byte {
	t.Helper()
	m := ocispec.Manifest{
		Versioned: specsVersioned,
		MediaType: mediaTypeOCIManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: config, Size: 2},
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: l, Size: 10})
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unknownDigests(n int) []digest.Digest {
	ds := make([]digest.Digest, n)
	for i := range ds {
		ds[i] = digest.FromString(fmt.Sprintf("never pushed %d", i))
	}
	return ds
}

// TestManifestOverTheReferenceCapIsRefusedBeforeStorage: a manifest listing
// more descriptors than maxManifestReferences costs no storage call at all
// and is answered MANIFEST_INVALID naming the limit.
func TestManifestOverTheReferenceCapIsRefusedBeforeStorage(t *testing.T) {
	d := &countingDriver{Driver: inmemory.New()}
	s, e := newServerOn(t, d, func(c *Config) { c.MaxManifestReferences = 100 })
	body := manifestOf(t, digest.FromString("config"), unknownDigests(5000)...)
	before := d.calls.Load()
	resp := e.do("PUT", "/v2/team/app/manifests/v1", body, "Content-Type", mediaTypeOCIManifest)
	b := e.expect(resp, http.StatusBadRequest)
	if code := errorCode(t, b); code != ociapi.CodeManifestInvalid {
		t.Errorf("code %s, want %s", code, ociapi.CodeManifestInvalid)
	}
	if !strings.Contains(string(b), "at most 100 (maxManifestReferences)") {
		t.Errorf("the refusal does not name the limit: %s", b)
	}
	if n := d.calls.Load() - before; n != 0 {
		t.Errorf("refusing a manifest over the cap made %d storage calls, want none", n)
	}
	if got := testutil.ToFloat64(s.metrics.limitRefusals.WithLabelValues(limitManifestReferences)); got != 1 {
		t.Errorf("shoal_origin_limit_refusals_total{limit=%q} = %v, want 1", limitManifestReferences, got)
	}
	// At the cap, the manifest is checked as usual.
	e.expect(e.do("PUT", "/v2/team/app/manifests/v1", manifestOf(t, digest.FromString("config"), unknownDigests(99)...),
		"Content-Type", mediaTypeOCIManifest), http.StatusBadRequest)
}

// TestUnknownReferencesStopTheChecksEarly: a manifest with hundreds of
// unknown layers, under the cap, is refused after a few rounds of checks,
// not two storage calls per layer.
func TestUnknownReferencesStopTheChecksEarly(t *testing.T) {
	d := &countingDriver{Driver: inmemory.New()}
	const conc = 4
	_, e := newServerOn(t, d, func(c *Config) { c.ManifestCheckConcurrency = conc })
	body := manifestOf(t, digest.FromString("config"), unknownDigests(1000)...)
	before := d.calls.Load()
	b := e.expect(e.do("PUT", "/v2/team/app/manifests/v1", body, "Content-Type", mediaTypeOCIManifest), http.StatusBadRequest)
	if code := errorCode(t, b); code != ociapi.CodeManifestBlobUnknown {
		t.Errorf("code %s, want %s", code, ociapi.CodeManifestBlobUnknown)
	}
	// Each check of a missing blob is two Stats (layer link, manifest
	// link); at most conc+1 checks start before the first miss stops them.
	if n, limit := d.calls.Load()-before, int64(2*(conc+1)); n > limit {
		t.Errorf("refusing 1000 unknown layers made %d storage calls, want at most %d", n, limit)
	}
}

// TestReferenceChecksRunConcurrentlyUpToTheLimit: the checks of one
// manifest run in parallel, never more than manifestCheckConcurrency at
// once, and a duplicated layer is checked once.
func TestReferenceChecksRunConcurrentlyUpToTheLimit(t *testing.T) {
	d := &countingDriver{Driver: inmemory.New()}
	const conc = 4
	_, e := newServerOn(t, d, func(c *Config) { c.ManifestCheckConcurrency = conc })
	config := e.pushBlob("team/app", []byte("{}"))
	var layers []digest.Digest
	for i := range 40 {
		layers = append(layers, e.pushBlob("team/app", []byte(fmt.Sprintf("layer %d", i))))
	}
	layers = append(layers, layers...) // every layer twice
	gate := make(chan struct{})
	d.mu.Lock()
	d.statGate, d.maxStat = gate, 0
	d.mu.Unlock()
	done := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest("PUT", e.base+"/v2/team/app/manifests/v1", strings.NewReader(string(manifestOf(t, config, layers...))))
		req.Header.Set("Content-Type", mediaTypeOCIManifest)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	eventually.True(t, fmt.Sprintf("the reference checks never reached %d at once", conc), func() bool { return d.statsInFlight() == conc })
	d.mu.Lock()
	d.statGate = nil
	d.mu.Unlock()
	close(gate)
	resp := <-done
	if resp == nil {
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push of a manifest whose layers are all there: %d, want 201", resp.StatusCode)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.maxStat > conc {
		t.Errorf("%d reference checks ran at once, want at most %d", d.maxStat, conc)
	}
}

// TestManifestValidationsInFlightAreCapped: beyond maxManifestValidations
// pushes being checked, the next gets 429 TOOMANYREQUESTS with Retry-After
// at once; once they end, pushes go through again.
func TestManifestValidationsInFlightAreCapped(t *testing.T) {
	d := &countingDriver{Driver: inmemory.New()}
	s, e := newServerOn(t, d, func(c *Config) { c.MaxManifestValidations = 2; c.ManifestCheckConcurrency = 1 })
	config := e.pushBlob("team/app", []byte("{}"))
	layer := e.pushBlob("team/app", []byte("layer"))
	gate := make(chan struct{})
	d.mu.Lock()
	d.statGate = gate
	d.mu.Unlock()
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/v2/team/app/manifests/held-%d", e.base, i), strings.NewReader(string(manifestOf(t, config, layer))))
			req.Header.Set("Content-Type", mediaTypeOCIManifest)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	eventually.True(t, "the two held pushes never both reached their checks", func() bool { return d.statsInFlight() == 2 })
	resp := e.do("PUT", "/v2/team/app/manifests/third", manifestOf(t, config, layer), "Content-Type", mediaTypeOCIManifest)
	b := e.expect(resp, http.StatusTooManyRequests)
	if code := errorCode(t, b); code != ociapi.CodeTooManyRequests {
		t.Errorf("code %s, want %s", code, ociapi.CodeTooManyRequests)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if got := testutil.ToFloat64(s.metrics.limitRefusals.WithLabelValues(limitManifestValidations)); got != 1 {
		t.Errorf("shoal_origin_limit_refusals_total{limit=%q} = %v, want 1", limitManifestValidations, got)
	}
	d.mu.Lock()
	d.statGate = nil
	d.mu.Unlock()
	close(gate)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusCreated {
			t.Errorf("a held push ended with %d, want 201", c)
		}
	}
	e.expect(e.do("PUT", "/v2/team/app/manifests/third", manifestOf(t, config, layer), "Content-Type", mediaTypeOCIManifest), http.StatusCreated)
}
