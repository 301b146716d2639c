package origin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/filesystem"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// faultDriver injects storage faults into a real driver: calls fail as an
// unreachable backend's do, or stall, ignoring their context as a hung
// mount does, until released.
type faultDriver struct {
	storage.Driver
	calls atomic.Int64 // calls that reached the driver

	mu sync.Mutex
	// failWritesAfter: writes after this many more fail (-1: none).
	failWritesAfter int
	fail            bool // every call fails
	stall           chan struct{}
}

func newFaultDriver(d storage.Driver) *faultDriver {
	return &faultDriver{Driver: d, failWritesAfter: -1}
}

func (d *faultDriver) set(fail bool, stall chan struct{}, failWritesAfter int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail, d.stall, d.failWritesAfter = fail, stall, failWritesAfter
}

func (d *faultDriver) fault(write bool) error {
	d.calls.Add(1)
	d.mu.Lock()
	stall, fail := d.stall, d.fail
	if write && d.failWritesAfter >= 0 {
		if d.failWritesAfter == 0 {
			fail = true
		} else {
			d.failWritesAfter--
		}
	}
	d.mu.Unlock()
	if stall != nil {
		<-stall
		return fmt.Errorf("injected stall ended: %w", storage.ErrUnavailable)
	}
	if fail {
		return fmt.Errorf("injected fault: %w", storage.ErrUnavailable)
	}
	return nil
}

func (d *faultDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if err := d.fault(false); err != nil {
		return nil, err
	}
	return d.Driver.GetContent(ctx, p)
}

func (d *faultDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if err := d.fault(true); err != nil {
		return err
	}
	return d.Driver.PutContent(ctx, p, b)
}

func (d *faultDriver) Reader(ctx context.Context, p string, off int64) (io.ReadCloser, error) {
	if err := d.fault(false); err != nil {
		return nil, err
	}
	return d.Driver.Reader(ctx, p, off)
}

func (d *faultDriver) Writer(ctx context.Context, p string, a bool) (storage.FileWriter, error) {
	if err := d.fault(true); err != nil {
		return nil, err
	}
	w, err := d.Driver.Writer(ctx, p, a)
	if err != nil {
		return nil, err
	}
	return &faultWriter{FileWriter: w, d: d}, nil
}

func (d *faultDriver) Stat(ctx context.Context, p string) (storage.FileInfo, error) {
	if err := d.fault(false); err != nil {
		return nil, err
	}
	return d.Driver.Stat(ctx, p)
}

func (d *faultDriver) List(ctx context.Context, p string) ([]string, error) {
	if err := d.fault(false); err != nil {
		return nil, err
	}
	return d.Driver.List(ctx, p)
}

func (d *faultDriver) Move(ctx context.Context, a, b string) error {
	if err := d.fault(true); err != nil {
		return err
	}
	return d.Driver.Move(ctx, a, b)
}

func (d *faultDriver) Delete(ctx context.Context, p string) error {
	if err := d.fault(true); err != nil {
		return err
	}
	return d.Driver.Delete(ctx, p)
}

// faultWriter fails a chunk's bytes, not only the opening of its part.
type faultWriter struct {
	storage.FileWriter
	d *faultDriver
}

func (w *faultWriter) Write(p []byte) (int, error) {
	if err := w.d.fault(true); err != nil {
		return 0, err
	}
	return w.FileWriter.Write(p)
}

func (w *faultWriter) Commit(ctx context.Context) error {
	if err := w.d.fault(true); err != nil {
		return err
	}
	return w.FileWriter.Commit(ctx)
}

func expectUnavailable(e exchange, resp *http.Response, what, driver string) {
	e.t.Helper()
	body := e.expect(resp, http.StatusServiceUnavailable)
	if resp.Request.Method == http.MethodHead {
		return
	}
	if code := errorCode(e.t, body); code != ociapi.CodeUnavailable {
		e.t.Errorf("%s: code %s, want %s", what, code, ociapi.CodeUnavailable)
	}
	if !strings.Contains(string(body), "storage backend "+driver) {
		e.t.Errorf("%s: the 503 does not name storage %s: %s", what, driver, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		e.t.Errorf("%s: 503 without Retry-After", what)
	}
}

func (e exchange) ready() int {
	e.t.Helper()
	resp := e.do("GET", "/readyz", nil)
	_, _ = io.ReadAll(resp.Body)
	return resp.StatusCode
}

// pushImage pushes a config and a layer and tags a manifest over them.
func (e exchange) pushImage(name, tag string, layer []byte) (manifest []byte, blobs map[digest.Digest][]byte) {
	e.t.Helper()
	config := []byte(`{"layer":"` + digest.FromBytes(layer).String() + `"}`)
	blobs = map[digest.Digest][]byte{e.pushBlob(name, config): config, e.pushBlob(name, layer): layer}
	manifest = manifestOf(e.t, digest.FromBytes(config), digest.FromBytes(layer))
	e.expect(e.do("PUT", "/v2/"+name+"/manifests/"+tag, manifest, "Content-Type", mediaTypeOCIManifest), http.StatusCreated)
	return manifest, blobs
}

// TestStalledStorageFailsFastAndRecoversWithoutRestart: storage that stops
// answering (calls hang, ignoring their context) costs the first request
// storageTimeout, then every request fails at once with 503 naming
// storage, without a call reaching it, readiness is red, and nothing of a
// chunk sent meanwhile counts; once storage answers, a probe finds it and
// pushes and pulls work again.
func TestStalledStorageFailsFastAndRecoversWithoutRestart(t *testing.T) {
	d := newFaultDriver(inmemory.New())
	clock := newTestClock()
	s, e := newServerOn(t, d, func(c *Config) { c.StorageTimeout = 100 * time.Millisecond })
	s.now = clock.Now
	manifest, _ := e.pushImage("team/app", "v1", []byte("layer one"))
	content := bytes.Repeat([]byte("chunked "), 1000)
	loc := startSession(e, "team/app")
	e.expect(e.do("PATCH", loc, content[:4000], "Content-Range", "0-3999"), http.StatusAccepted)
	if code := e.ready(); code != http.StatusOK {
		t.Fatalf("readyz before the stall: %d", code)
	}

	stall := make(chan struct{})
	d.set(false, stall, -1)
	t.Cleanup(func() { d.set(false, nil, -1) })
	defer close(stall)
	expectUnavailable(e, e.do("GET", "/v2/team/app/manifests/v1", nil), "manifest GET while storage stalls", "inmemory")
	clock.Advance(time.Second)
	if code := e.ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while storage stalls: %d, want 503", code)
	}
	if got := testutil.ToFloat64(s.metrics.storageUp); got != 0 {
		t.Errorf("shoal_origin_storage_up = %v while storage stalls, want 0", got)
	}

	before := d.calls.Load()
	for range 20 {
		expectUnavailable(e, e.do("GET", "/v2/team/app/manifests/v1", nil), "manifest GET, storage out", "inmemory")
		expectUnavailable(e, e.do("HEAD", "/v2/team/app/blobs/"+digest.FromString("x").String(), nil), "blob HEAD, storage out", "inmemory")
		expectUnavailable(e, e.do("POST", "/v2/team/app/blobs/uploads/", nil), "upload start, storage out", "inmemory")
		expectUnavailable(e, e.do("PATCH", loc, content[4000:], "Content-Range", fmt.Sprintf("4000-%d", len(content)-1)), "chunk, storage out", "inmemory")
		e.expect(e.do("GET", "/v2/_catalog", nil), http.StatusServiceUnavailable)
	}
	if n := d.calls.Load() - before; n != 0 {
		t.Fatalf("%d calls reached the stalled storage while it was known out, want none (fail fast)", n)
	}
	if got := testutil.ToFloat64(s.metrics.storageRefusals); got < 80 {
		t.Errorf("shoal_origin_storage_refusals_total = %v, want at least the 80 calls refused", got)
	}

	// Storage answers again: the next probe finds it, no restart needed.
	d.set(false, nil, -1)
	clock.Advance(time.Second)
	if code := e.ready(); code != http.StatusOK {
		t.Fatalf("readyz once storage answers again: %d, want 200", code)
	}
	if got := e.expect(e.do("GET", "/v2/team/app/manifests/v1", nil), http.StatusOK); !bytes.Equal(got, manifest) {
		t.Fatal("manifest after recovery differs")
	}
	e.expectCommitted(loc, 4000, "after the outage")
	resp := e.do("PATCH", loc, content[4000:], "Content-Range", fmt.Sprintf("4000-%d", len(content)-1))
	e.expect(resp, http.StatusAccepted)
	d2 := digest.FromBytes(content)
	e.expect(e.do("PUT", resp.Header.Get("Location")+"?digest="+d2.String(), nil), http.StatusCreated)
	if got := e.expect(e.do("GET", "/v2/team/app/blobs/"+d2.String(), nil), http.StatusOK); !bytes.Equal(got, content) {
		t.Fatal("blob finished after the outage differs from what was pushed")
	}
}

// TestFailingStorageNeverShowsHalfAPush: a push interrupted by storage
// failing at each of its writes in turn leaves every blob and manifest
// either absent or whole; once storage is back the same push succeeds.
func TestFailingStorageNeverShowsHalfAPush(t *testing.T) {
	layer := bytes.Repeat([]byte("layer bytes "), 5000)
	for k := 0; ; k++ {
		d := newFaultDriver(inmemory.New())
		clock := newTestClock()
		s, e := newServerOn(t, d, func(c *Config) { c.StorageTimeout = time.Minute })
		s.now = clock.Now
		d.set(false, nil, k)
		config := []byte(`{"k":` + fmt.Sprint(k) + `}`)
		manifest := manifestOf(t, digest.FromBytes(config), digest.FromBytes(layer))
		failed := !pushAll(e, "team/app", config, layer, manifest)

		d.set(false, nil, -1)
		clock.Advance(time.Second)
		if code := e.ready(); code != http.StatusOK {
			t.Fatalf("write %d failed: readyz after storage came back: %d, want 200", k, code)
		}
		for _, b := range [][]byte{config, layer} {
			resp := e.do("GET", "/v2/team/app/blobs/"+digest.FromBytes(b).String(), nil)
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode == http.StatusOK && !bytes.Equal(got, b) {
				t.Fatalf("write %d failed: blob %s is visible with %d bytes that differ from the %d pushed", k, digest.FromBytes(b), len(got), len(b))
			}
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
				t.Fatalf("write %d failed: blob GET after recovery: %d", k, resp.StatusCode)
			}
		}
		resp := e.do("GET", "/v2/team/app/manifests/latest", nil)
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK {
			if !bytes.Equal(got, manifest) {
				t.Fatalf("write %d failed: the tag shows a manifest that differs from the one pushed", k)
			}
			for _, b := range [][]byte{config, layer} {
				e.expect(e.do("HEAD", "/v2/team/app/blobs/"+digest.FromBytes(b).String(), nil), http.StatusOK)
			}
		}
		if !pushAll(e, "team/app", config, layer, manifest) {
			t.Fatalf("write %d failed: the push again after recovery failed", k)
		}
		if !failed {
			if k < 5 {
				t.Fatalf("a push with its write %d failing succeeded: the fault was not injected", k)
			}
			t.Logf("the push survived a failure at each of its %d writes", k)
			return // every write of the push has failed once
		}
	}
}

// pushAll pushes a blob monolithically, another in chunks, and a tagged
// manifest, reporting whether everything succeeded.
func pushAll(e exchange, name string, config, layer, manifest []byte) bool {
	e.t.Helper()
	ok := func(resp *http.Response, want int) bool {
		_, _ = io.ReadAll(resp.Body)
		if resp.StatusCode == want {
			return true
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			e.t.Fatalf("%s %s during a storage failure: %d, want %d or 503", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want)
		}
		return false
	}
	if !ok(e.do("POST", "/v2/"+name+"/blobs/uploads/?digest="+digest.FromBytes(config).String(), config), http.StatusCreated) {
		return false
	}
	resp := e.do("POST", "/v2/"+name+"/blobs/uploads/", nil)
	if !ok(resp, http.StatusAccepted) {
		return false
	}
	loc := resp.Header.Get("Location")
	half := len(layer) / 2
	resp = e.do("PATCH", loc, layer[:half], "Content-Range", fmt.Sprintf("0-%d", half-1))
	if !ok(resp, http.StatusAccepted) {
		return false
	}
	resp = e.do("PATCH", loc, layer[half:], "Content-Range", fmt.Sprintf("%d-%d", half, len(layer)-1))
	if !ok(resp, http.StatusAccepted) {
		return false
	}
	if !ok(e.do("PUT", loc+"?digest="+digest.FromBytes(layer).String(), nil), http.StatusCreated) {
		return false
	}
	return ok(e.do("PUT", "/v2/"+name+"/manifests/latest", manifest, "Content-Type", mediaTypeOCIManifest), http.StatusCreated)
}

// TestFilesystemStorageGoneIs503AndComesBack: on the real filesystem
// driver, a storage directory that disappears (replaced by a file, as a
// failed mount leaves it) makes pushes 503 naming storage and readiness
// red; once the directory is back, readiness and pushes recover without a
// restart.
func TestFilesystemStorageGoneIs503AndComesBack(t *testing.T) {
	root := t.TempDir() + "/storage"
	fsd, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	clock := newTestClock()
	s, e := newServerOn(t, fsd)
	s.now = clock.Now
	_, blobs := e.pushImage("team/app", "v1", []byte("before the outage"))

	if err := os.Rename(root, root+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	blob := []byte("during the outage")
	expectUnavailable(e, e.do("POST", "/v2/team/app/blobs/uploads/?digest="+digest.FromBytes(blob).String(), blob), "push with storage gone", "filesystem")
	clock.Advance(time.Second)
	if code := e.ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the storage directory gone: %d, want 503", code)
	}
	expectUnavailable(e, e.do("POST", "/v2/team/app/blobs/uploads/", nil), "upload start with storage gone", "filesystem")

	if err := os.Remove(root); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(root+".away", root); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if code := e.ready(); code != http.StatusOK {
		t.Fatalf("readyz with the storage directory back: %d, want 200", code)
	}
	e.pushBlob("team/app", blob)
	for d, b := range blobs {
		if got := e.expect(e.do("GET", "/v2/team/app/blobs/"+d.String(), nil), http.StatusOK); !bytes.Equal(got, b) {
			t.Fatalf("blob %s pushed before the outage differs after it", d)
		}
	}
}
