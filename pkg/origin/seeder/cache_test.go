package seeder

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/internal/eventually"
)

func newTestCache(t *testing.T, dir string, quota int64) *cache {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := newCache(ctx, dir, quota, newMetrics(prometheus.NewRegistry()), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		c.close()
	})
	return c
}

func bytesSource(b []byte) func(context.Context) (io.ReadCloser, error) {
	return func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

func readEntry(t *testing.T, e *entry) []byte {
	t.Helper()
	b, err := io.ReadAll(e.reader(context.Background(), 0, e.size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitDone(t *testing.T, e *entry) {
	t.Helper()
	if _, err := e.readAt(context.Background(), make([]byte, 0), e.size); err != nil && e.size > 0 {
		t.Fatal(err)
	}
	eventually.True(t, "the cache fill to finish", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.done
	})
}

func TestCacheEvictsLeastRecentlyUsedAndNeverPinned(t *testing.T) {
	c := newTestCache(t, t.TempDir(), 3000)
	blobs := map[string][]byte{}
	ds := map[string]digest.Digest{}
	for _, name := range []string{"a", "b", "c", "d"} {
		blobs[name] = bytes.Repeat([]byte(name), 1000)
		ds[name] = digest.FromBytes(blobs[name])
	}
	open := func(name string) *entry {
		t.Helper()
		e, err := c.open(ds[name], 1000, bytesSource(blobs[name]))
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		waitDone(t, e)
		return e
	}
	for _, name := range []string{"a", "b", "c"} {
		c.release(open(name))
	}
	// Use a again, so b is the least recently used; pin c.
	c.release(open("a"))
	pinned := open("c")
	c.release(open("d"))
	for name, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if got := c.has(ds[name]); got != want {
			t.Errorf("after adding d: has(%s) = %v, want %v", name, got, want)
		}
	}
	if _, err := os.Stat(c.blobPath(ds["b"])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("evicted blob b still on disk: %v", err)
	}
	// Everything else pinned too: no room for a new blob.
	pa, pd := open("a"), open("d")
	e, err := c.open(ds["b"], 1000, bytesSource(blobs["b"]))
	if !errors.Is(err, errNoRoom) {
		t.Fatalf("open with every blob pinned = %v, %v; want errNoRoom", e, err)
	}
	if !bytes.Equal(readEntry(t, pinned), blobs["c"]) {
		t.Error("pinned blob c changed")
	}
	for _, e := range []*entry{pinned, pa, pd} {
		c.release(e)
	}
	if _, err := c.open(digest.FromString("big"), 3001, bytesSource(nil)); !errors.Is(err, errNoRoom) {
		t.Errorf("blob larger than the quota: %v, want errNoRoom", err)
	}
	if n := counter(t, c.m.cacheEvictions); n != 1 {
		t.Errorf("evictions = %.0f, want 1", n)
	}
}

// Readers get bytes as the fill writes them, before the blob is complete.
func TestCacheServesWhileFilling(t *testing.T) {
	c := newTestCache(t, t.TempDir(), 1<<20)
	blob := bytes.Repeat([]byte("x"), 3000)
	pr, pw := io.Pipe()
	e, err := c.open(digest.FromBytes(blob), int64(len(blob)), func(context.Context) (io.ReadCloser, error) { return pr, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer c.release(e)
	go func() { _, _ = pw.Write(blob[:1000]) }()
	buf := make([]byte, 1000)
	if _, err := e.readAt(context.Background(), buf, 0); err != nil {
		t.Fatalf("reading the first 1000 bytes while the rest is not written: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := e.readAt(ctx, buf, 1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reading bytes not yet written = %v, want to wait until the deadline", err)
	}
	go func() {
		_, _ = pw.Write(blob[1000:])
		pw.Close()
	}()
	if !bytes.Equal(readEntry(t, e), blob) {
		t.Fatal("blob read while filling differs")
	}
}

// A restarted node adopts the complete blobs of its previous run and drops
// partial ones.
func TestCacheAdoptsPreviousRun(t *testing.T) {
	dir := t.TempDir()
	blob := []byte("cached before the restart")
	dg := digest.FromBytes(blob)
	{
		ctx, cancel := context.WithCancel(context.Background())
		c, err := newCache(ctx, dir, 1<<20, newMetrics(nil), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		e, err := c.open(dg, int64(len(blob)), bytesSource(blob))
		if err != nil {
			t.Fatal(err)
		}
		waitDone(t, e)
		c.release(e)
		cancel()
		c.close()
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", "partial"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t, dir, 1<<20)
	if !c.has(dg) {
		t.Fatal("blob from the previous run not adopted")
	}
	e, err := c.open(dg, int64(len(blob)), func(context.Context) (io.ReadCloser, error) {
		return nil, errors.New("storage must not be read for an adopted blob")
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.release(e)
	if !bytes.Equal(readEntry(t, e), blob) {
		t.Fatal("adopted blob differs")
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "partial")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial file of the previous run kept: %v", err)
	}
}

func TestCacheFillErrorIsReportedAndForgotten(t *testing.T) {
	c := newTestCache(t, t.TempDir(), 1<<20)
	blob := []byte("short")
	dg := digest.FromBytes(blob)
	e, err := c.open(dg, 100, bytesSource(blob)) // storage has fewer bytes than the size
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.readAt(context.Background(), make([]byte, 10), 50); err == nil {
		t.Fatal("reading past what storage had succeeded")
	}
	c.release(e)
	if c.has(dg) {
		t.Error("failed fill stayed in the cache")
	}
	if c.used != 0 {
		t.Errorf("failed fill left %d bytes reserved", c.used)
	}
}
