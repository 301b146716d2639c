package seeder

import (
	"cmp"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
)

// errNoRoom means a blob cannot be cached now: it is larger than the quota,
// or every cached blob is in use. The caller serves it from storage.
var errNoRoom = errors.New("blob does not fit in the seeder cache")

// cache is the node's local disk copy of the blobs it owns: dir/<alg>/<hex>
// for complete blobs, dir/tmp/ for blobs being read from storage. Each blob
// is read from storage once, however many requests want it at the same
// time; readers are served from the partial file as it fills, so the first
// piece goes out without waiting for the whole blob. Complete blobs are
// evicted least recently used first, never while in use.
type cache struct {
	dir   string
	quota int64
	m     *metrics
	log   *slog.Logger
	// ctx bounds fills: they outlive the request that started them (other
	// requests wait on them) but not the seeder.
	ctx   context.Context
	fills sync.WaitGroup

	mu      sync.Mutex
	entries map[digest.Digest]*entry
	lru     *list.List // complete entries, most recently used first
	used    int64      // complete entries plus space reserved by fills
}

// entry is one cached blob. The fields up to dropped are guarded by
// cache.mu; the fill state by entry.mu.
type entry struct {
	d    digest.Digest
	size int64
	path string
	f    *os.File // nil until first used, for blobs found at startup

	refs    int
	elem    *list.Element // in cache.lru once complete
	dropped bool          // no longer in cache.entries: close f at refs 0

	mu       sync.Mutex
	written  int64
	done     bool
	err      error
	progress chan struct{} // closed and replaced whenever written or done changes
}

func newCache(ctx context.Context, dir string, quota int64, m *metrics, log *slog.Logger) (*cache, error) {
	c := &cache{dir: dir, quota: quota, m: m, log: log, ctx: ctx, entries: map[digest.Digest]*entry{}, lru: list.New()}
	// Partial files of a previous run cannot be resumed: their digest state
	// is gone.
	if err := os.RemoveAll(c.tmpDir()); err != nil {
		return nil, fmt.Errorf("seeder cache: clearing %s: %w", c.tmpDir(), err)
	}
	if err := os.MkdirAll(c.tmpDir(), 0o755); err != nil {
		return nil, fmt.Errorf("seeder cache: creating %s: %w", c.tmpDir(), err)
	}
	if err := c.loadExisting(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *cache) tmpDir() string { return filepath.Join(c.dir, "tmp") }

func (c *cache) blobPath(d digest.Digest) string {
	return filepath.Join(c.dir, string(d.Algorithm()), d.Encoded())
}

// loadExisting adopts the complete blobs left by a previous run (they were
// verified before being renamed into place), oldest use last.
func (c *cache) loadExisting() error {
	type found struct {
		e     *entry
		mtime int64
	}
	var all []found
	algs, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("seeder cache: reading %s: %w", c.dir, err)
	}
	for _, alg := range algs {
		if !alg.IsDir() || alg.Name() == "tmp" {
			continue
		}
		files, err := os.ReadDir(filepath.Join(c.dir, alg.Name()))
		if err != nil {
			return fmt.Errorf("seeder cache: reading %s: %w", alg.Name(), err)
		}
		for _, f := range files {
			d := digest.NewDigestFromEncoded(digest.Algorithm(alg.Name()), f.Name())
			info, err := f.Info()
			if err != nil || d.Validate() != nil || !info.Mode().IsRegular() {
				continue
			}
			e := &entry{d: d, size: info.Size(), path: c.blobPath(d), written: info.Size(), done: true, progress: make(chan struct{})}
			all = append(all, found{e, info.ModTime().UnixNano()})
		}
	}
	slices.SortFunc(all, func(a, b found) int { return cmp.Compare(a.mtime, b.mtime) })
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range all {
		f.e.elem = c.lru.PushFront(f.e)
		c.entries[f.e.d] = f.e
		c.used += f.e.size
	}
	c.makeRoom(0)
	c.m.cacheBytes.Set(float64(c.used))
	if len(all) > 0 {
		c.log.Info("seeder cache: adopted blobs from a previous run", "blobs", len(c.entries), "bytes", c.used)
	}
	return nil
}

// open returns the cached blob d of the given size, pinned until release.
// A blob not cached yet is read from storage through src in the background,
// once; concurrent opens share that read. It returns errNoRoom when the
// blob cannot be cached now.
func (c *cache) open(d digest.Digest, size int64, src func(ctx context.Context) (io.ReadCloser, error)) (*entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[d]; ok {
		if e.f == nil {
			f, err := os.Open(e.path)
			if err != nil {
				// Removed behind our back: forget it and read it again.
				c.log.Warn("seeder cache: cached blob unreadable; reading it again", "digest", d, "err", err)
				c.drop(e)
				return c.startFill(d, size, src)
			}
			e.f = f
		}
		e.refs++
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
		}
		c.m.cacheHits.Inc()
		return e, nil
	}
	return c.startFill(d, size, src)
}

// startFill reserves room for d and starts reading it. Called with c.mu held.
func (c *cache) startFill(d digest.Digest, size int64, src func(ctx context.Context) (io.ReadCloser, error)) (*entry, error) {
	if size > c.quota || !c.makeRoom(size) {
		return nil, errNoRoom
	}
	f, err := os.CreateTemp(c.tmpDir(), d.Encoded()+"-*")
	if err != nil {
		return nil, fmt.Errorf("seeder cache: creating a file for %s: %w", d, err)
	}
	e := &entry{d: d, size: size, path: c.blobPath(d), f: f, refs: 1, progress: make(chan struct{})}
	c.entries[d] = e
	c.used += size
	c.m.cacheBytes.Set(float64(c.used))
	c.m.cacheMisses.Inc()
	c.fills.Add(1)
	go c.fill(e, src)
	return e, nil
}

// makeRoom evicts unused complete blobs, least recently used first, until
// need more bytes fit under the quota. Called with c.mu held.
func (c *cache) makeRoom(need int64) bool {
	for el := c.lru.Back(); el != nil && c.used+need > c.quota; {
		e := el.Value.(*entry)
		el = el.Prev()
		if e.refs > 0 {
			continue
		}
		c.drop(e)
		if err := os.Remove(e.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("seeder cache: removing evicted blob", "digest", e.d, "err", err)
		}
		c.m.cacheEvictions.Inc()
	}
	return c.used+need <= c.quota
}

// drop forgets e. Called with c.mu held.
func (c *cache) drop(e *entry) {
	if c.entries[e.d] == e {
		delete(c.entries, e.d)
	}
	if e.elem != nil {
		c.lru.Remove(e.elem)
		e.elem = nil
	}
	if !e.dropped {
		c.used -= e.size
		c.m.cacheBytes.Set(float64(c.used))
	}
	e.dropped = true
	if e.refs == 0 && e.f != nil {
		_ = e.f.Close()
		e.f = nil
	}
}

func (c *cache) fill(e *entry, src func(ctx context.Context) (io.ReadCloser, error)) {
	defer c.fills.Done()
	tmp := e.f.Name()
	err := c.copyVerified(e, src)
	if err == nil {
		if err = os.MkdirAll(filepath.Dir(e.path), 0o755); err == nil {
			err = os.Rename(tmp, e.path)
		}
		if err != nil {
			err = fmt.Errorf("seeder cache: placing %s: %w", e.d, err)
		}
	}
	if err != nil {
		c.log.Warn("seeder cache: reading blob from storage failed", "digest", e.d, "err", err)
		_ = os.Remove(tmp)
		c.mu.Lock()
		c.drop(e)
		c.mu.Unlock()
	}
	// Readers see the outcome before the entry becomes evictable, so that a
	// reader never waits on a removed entry.
	e.finish(err)
	if err == nil {
		c.mu.Lock()
		if !e.dropped {
			e.elem = c.lru.PushFront(e)
		}
		c.mu.Unlock()
	}
}

// copyVerified copies the blob from storage into e.f, checking its length
// and digest: a corrupt copy in storage is never seeded.
func (c *cache) copyVerified(e *entry, src func(ctx context.Context) (io.ReadCloser, error)) error {
	rc, err := src(c.ctx)
	if err != nil {
		return fmt.Errorf("opening %s in storage: %w", e.d, err)
	}
	defer rc.Close()
	v := e.d.Verifier()
	buf := make([]byte, chunkSize)
	var n int64
	for n < e.size {
		k, rerr := rc.Read(buf[:min(int64(len(buf)), e.size-n)])
		if k > 0 {
			if _, err := e.f.Write(buf[:k]); err != nil {
				return fmt.Errorf("writing %s to the cache: %w", e.d, err)
			}
			_, _ = v.Write(buf[:k])
			n += int64(k)
			c.m.storageReadBytes.Add(float64(k))
			e.advance(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading %s from storage at %d: %w", e.d, n, rerr)
		}
	}
	if n != e.size {
		return fmt.Errorf("reading %s from storage: got %d bytes, want %d", e.d, n, e.size)
	}
	if !v.Verified() {
		return fmt.Errorf("reading %s from storage: content does not match its digest", e.d)
	}
	return nil
}

func (e *entry) advance(n int64) {
	e.mu.Lock()
	e.written = n
	close(e.progress)
	e.progress = make(chan struct{})
	e.mu.Unlock()
}

func (e *entry) finish(err error) {
	e.mu.Lock()
	e.done, e.err = true, err
	close(e.progress)
	e.progress = make(chan struct{})
	e.mu.Unlock()
}

// readAt reads len(p) bytes at off, waiting for the fill to get there.
func (e *entry) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := e.waitFor(ctx, off+int64(len(p))); err != nil {
		return 0, err
	}
	return e.f.ReadAt(p, off)
}

// waitFor waits until the first end bytes of the blob are in e.f: at once
// for a complete blob, as the fill gets there for one being read in.
func (e *entry) waitFor(ctx context.Context, end int64) error {
	for {
		e.mu.Lock()
		written, done, err, progress := e.written, e.done, e.err, e.progress
		e.mu.Unlock()
		if written >= end {
			return nil
		}
		if done {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// reader returns the bytes [off, off+n) of e as a stream.
func (e *entry) reader(ctx context.Context, off, n int64) io.Reader {
	return &entryReader{ctx: ctx, e: e, off: off, end: off + n}
}

type entryReader struct {
	ctx      context.Context
	e        *entry
	off, end int64
}

func (r *entryReader) Read(p []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.end-r.off)]
	n, err := r.e.readAt(r.ctx, p, r.off)
	r.off += int64(n)
	return n, err
}

// release unpins e.
func (c *cache) release(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.dropped && e.refs == 0 && e.f != nil {
		_ = e.f.Close()
		e.f = nil
	}
}

// has reports whether d is cached or being read into the cache.
func (c *cache) has(d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[d]
	return ok
}

// close waits for fills (the caller has cancelled their context) and
// closes every file.
func (c *cache) close() {
	c.fills.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		if e.f != nil {
			_ = e.f.Close()
			e.f = nil
		}
	}
}
