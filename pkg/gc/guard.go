package gc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// ErrBeingCollected is returned by Guard.Check when a blob the caller just
// linked is being deleted by GC, or already was. The origin answers the
// request with BLOB_UNKNOWN (MANIFEST_BLOB_UNKNOWN for a manifest) so that
// the client uploads the blob again.
var ErrBeingCollected = errors.New("blob is being garbage collected")

// Guard is the origin's half of the protocol that keeps a push from losing
// a blob to a concurrent sweep. The origin calls Check after it has written
// the links of an operation and before it acknowledges it:
//
//   - blob upload or mount: after writing _layers/<digest>/link, with
//     linked = referenced = [digest];
//   - manifest PUT: after writing the revision link and before the tag
//     links and the referrers index entry, with linked = nil and
//     referenced = the manifest digest, its config, layers and index
//     children.
//
// Check fails when a blob is in the pending-deletion set of a sweep, when
// its data is gone, or when a layer link in linked is gone. GC writes the
// set before it re-reads the links and removes it only after the data and
// the dangling links are deleted, so either GC's re-read sees the caller's
// link and keeps the blob, or Check sees the set or the deletion. On
// failure the origin removes the revision link it wrote (a manifest PUT)
// and reports the error; it must not write the tags.
//
// A Guard caches the pending sets it read; it is safe for concurrent use.
// Outside a sweep a Check costs one List plus one Stat per digest.
type Guard struct {
	drv storage.Driver

	mu    sync.Mutex
	cache map[string]pendingSet // by file path
}

type pendingSet struct {
	mod     time.Time
	size    int64
	digests map[digest.Digest]bool
}

// NewGuard returns a Guard over the origin's storage driver.
func NewGuard(drv storage.Driver) *Guard {
	return &Guard{drv: drv, cache: map[string]pendingSet{}}
}

// CheckReferences is Guard.Check without a cache, for callers that check
// rarely.
func CheckReferences(ctx context.Context, drv storage.Driver, repo string, linked, referenced []digest.Digest) error {
	return NewGuard(drv).Check(ctx, repo, linked, referenced)
}

// Check implements the protocol described on Guard.
func (g *Guard) Check(ctx context.Context, repo string, linked, referenced []digest.Digest) error {
	for _, d := range linked {
		if _, err := g.drv.Stat(ctx, layerLinkPath(repo, d)); err != nil {
			if isNotFound(err) {
				return fmt.Errorf("%w: %s link in %s removed", ErrBeingCollected, d, repo)
			}
			return fmt.Errorf("checking link of %s in %s: %w", d, repo, err)
		}
	}
	pending, err := g.pending(ctx)
	if err != nil {
		return err
	}
	for _, d := range referenced {
		for _, set := range pending {
			if set[d] {
				return fmt.Errorf("%w: %s", ErrBeingCollected, d)
			}
		}
		if _, err := g.drv.Stat(ctx, blobDataPath(d)); err != nil {
			if isNotFound(err) {
				return fmt.Errorf("%w: %s data deleted", ErrBeingCollected, d)
			}
			return fmt.Errorf("checking data of %s: %w", d, err)
		}
	}
	return nil
}

// pending reads the pending-deletion sets of the sweeps in progress
// (normally none or one). A set only shrinks while its file exists, so a
// cached copy is never missing a digest the file has; the cache is keyed on
// ModTime and size anyway so that a rewrite is read again.
func (g *Guard) pending(ctx context.Context) ([]map[digest.Digest]bool, error) {
	files, err := g.drv.List(ctx, pendingRoot)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing gc pending sets: %w", err)
	}
	var sets []map[digest.Digest]bool
	for _, f := range files {
		fi, err := g.drv.Stat(ctx, f)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("checking gc pending set %s: %w", f, err)
		}
		g.mu.Lock()
		c, ok := g.cache[f]
		g.mu.Unlock()
		if !ok || !c.mod.Equal(fi.ModTime()) || c.size != fi.Size() {
			b, err := g.drv.GetContent(ctx, f)
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("reading gc pending set %s: %w", f, err)
			}
			c = pendingSet{mod: fi.ModTime(), size: fi.Size(), digests: parsePendingSet(b)}
			g.mu.Lock()
			g.cache[f] = c
			g.mu.Unlock()
		}
		sets = append(sets, c.digests)
	}
	g.mu.Lock()
	for f := range g.cache {
		if !slices.Contains(files, f) {
			delete(g.cache, f)
		}
	}
	g.mu.Unlock()
	return sets, nil
}

// pendingSetPath is the pending-deletion set of the sweep holding token:
// one file per sweep, so that a runner that lost its lease and cleans up
// never removes the set of the runner that took over.
func pendingSetPath(token uint64) string {
	return path.Join(pendingRoot, strconv.FormatUint(token, 10))
}

func formatPendingSet(ds []digest.Digest) []byte {
	var b bytes.Buffer
	for _, d := range ds {
		b.WriteString(d.String())
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func parsePendingSet(b []byte) map[digest.Digest]bool {
	set := map[digest.Digest]bool{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			set[digest.Digest(line)] = true
		}
	}
	return set
}

func writePendingSet(ctx context.Context, drv storage.Driver, token uint64, ds []digest.Digest) error {
	if err := drv.PutContent(ctx, pendingSetPath(token), formatPendingSet(ds)); err != nil {
		return fmt.Errorf("writing gc pending set: %w", err)
	}
	return nil
}

func removePendingSet(ctx context.Context, drv storage.Driver, token uint64) error {
	if err := drv.Delete(ctx, pendingSetPath(token)); err != nil && !isNotFound(err) {
		return fmt.Errorf("removing gc pending set: %w", err)
	}
	return nil
}
