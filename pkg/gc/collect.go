package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// collection is one run's state, from the lease to the report.
type collection struct {
	r     *Runner
	drv   storage.Driver
	lease *Lease
	rep   *Report
	dry   bool
	log   *slog.Logger

	cutoff time.Time
	refs   *manifestReader

	current    Phase
	phaseStart time.Time

	// mu guards rep while deletions run in parallel.
	mu sync.Mutex
}

// leaseMargin is the lease time a batch of deletions must have left when
// it starts; a batch is sized to take far less.
func (c *collection) leaseMargin() time.Duration { return time.Duration(c.r.cfg.LeaseTTL) / 2 }

func (c *collection) checkLease(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.lease.Check(ctx, c.leaseMargin())
}

func (c *collection) run(ctx context.Context) error {
	if !c.dry {
		if err := c.clearStalePendingSets(ctx); err != nil {
			return err
		}
	}
	t0 := c.r.now()
	c.rep.MarkStart = t0
	c.cutoff = t0.Add(-time.Duration(c.r.cfg.Grace))
	c.refs = newManifestReader(c.drv)

	// The blob store is walked while the repositories are read and
	// marked: the walks are independent and latency-bound, and any walk
	// after T0 is as good as another, since only blobs written before the
	// cutoff can be candidates.
	walkCtx, stopWalk := context.WithCancel(ctx)
	defer stopWalk()
	type blobWalk struct {
		blobs map[digest.Digest]BlobInfo
		err   error
	}
	walked := make(chan blobWalk, 1)
	go func() {
		b, err := c.readBlobs(walkCtx)
		walked <- blobWalk{b, err}
	}()
	var walk *blobWalk
	blobs := func() (map[digest.Digest]BlobInfo, error) {
		if walk == nil {
			w := <-walked
			walk = &w
		}
		return walk.blobs, walk.err
	}
	// Never leave the walk running past the run (and its lease).
	defer func() {
		stopWalk()
		_, _ = blobs()
	}()

	c.phase(PhaseInventory)
	inv, err := readInventory(ctx, c.drv)
	if err != nil {
		return err
	}
	c.r.update(func(p *Progress) {
		p.Repositories = len(inv.Repos)
		for _, r := range inv.Repos {
			p.Manifests += len(r.Revisions)
		}
	})

	if len(c.r.cfg.Rules) > 0 {
		c.phase(PhaseRetention)
		if err := c.retention(ctx, inv); err != nil {
			return err
		}
	}

	c.phase(PhaseMark)
	marked, err := Mark(ctx, inv, c.refs.refs)
	if err != nil {
		return fmt.Errorf("marking: %w", err)
	}
	c.rep.MissingManifests = marked.Missing
	c.rep.BlobsMarked = len(marked.Marked)
	for _, m := range marked.Missing {
		c.log.Warn("manifest revision without data; skipped as registry:2 does", "repo", m.Repo, "digest", m.Digest)
	}

	c.phase(PhaseSweep)
	all, err := blobs()
	if err != nil {
		return err
	}
	if err := c.sweep(ctx, inv, marked.Marked, all); err != nil {
		return err
	}

	c.phase(PhaseUploads)
	err = c.purgeUploads(ctx, inv)
	c.phase(PhaseIdle)
	return err
}

// phase records the end of the current phase and the start of the next.
func (c *collection) phase(next Phase) {
	now := c.r.now()
	if c.rep.Phases == nil {
		c.rep.Phases = map[Phase]Duration{}
	}
	if c.current != "" {
		c.rep.Phases[c.current] += Duration(now.Sub(c.phaseStart))
	}
	c.current, c.phaseStart = next, now
	c.r.update(func(p *Progress) { p.Phase = next })
}

// clearStalePendingSets removes pending-deletion sets left by runs that died:
// holding the lease with the newest token, this run owns none of them.
func (c *collection) clearStalePendingSets(ctx context.Context) error {
	var stale []string
	if err := walkFiles(ctx, c.drv, pendingRoot, func(fi storage.FileInfo) error {
		stale = append(stale, fi.Path())
		return nil
	}); err != nil {
		return fmt.Errorf("listing stale gc pending sets: %w", err)
	}
	for _, p := range stale {
		if err := c.drv.Delete(ctx, p); err != nil && !isNotFound(err) {
			return fmt.Errorf("removing stale gc pending set %s: %w", p, err)
		}
	}
	return nil
}

// snapshot reads the manifests of the repositories some rule applies to.
func (c *collection) snapshot(ctx context.Context, inv *Inventory) (Snapshot, error) {
	var s Snapshot
	for _, name := range inv.RepoNames() {
		ruled := false
		for i := range c.r.cfg.Rules {
			if c.r.cfg.Rules[i].matchesRepo(name) {
				ruled = true
				break
			}
		}
		if !ruled {
			continue
		}
		ri := inv.Repos[name]
		rs := RepoSnapshot{Name: name}
		for tag, l := range ri.Tags {
			rs.Tags = append(rs.Tags, TagInfo{Name: tag, Digest: l.Digest, PushedAt: l.ModTime})
		}
		for d, t := range ri.Revisions {
			refs, err := c.refs.refs(ctx, d)
			if errors.Is(err, errManifestMissing) {
				continue
			}
			if err != nil {
				return Snapshot{}, err
			}
			rs.Manifests = append(rs.Manifests, ManifestInfo{Digest: d, PushedAt: t, Refs: refs})
		}
		s.Repos = append(s.Repos, rs)
	}
	return s, nil
}

// retention plans and applies the rules, and removes what it deleted from
// the inventory so that marking no longer counts it.
func (c *collection) retention(ctx context.Context, inv *Inventory) error {
	s, err := c.snapshot(ctx, inv)
	if err != nil {
		return fmt.Errorf("reading manifests for retention: %w", err)
	}
	plan, err := PlanRetention(s, c.r.cfg.Rules, c.r.now())
	if err != nil {
		return err
	}
	if c.dry {
		c.rep.Tags, c.rep.Manifests = plan.Tags, plan.Manifests
		for _, m := range plan.Manifests {
			delete(inv.Repos[m.Repo].Revisions, m.Digest)
		}
		return nil
	}
	batch := c.r.cfg.BatchSize
	for i, t := range plan.Tags {
		if i%batch == 0 {
			if err := c.checkLease(ctx); err != nil {
				return err
			}
		}
		err := c.r.deleter.DeleteTag(ctx, t.Repo, t.Tag, t.Digest)
		if errors.Is(err, ErrTagMoved) {
			c.rep.SkippedTags = append(c.rep.SkippedTags, t)
			continue
		}
		if err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		c.rep.Tags = append(c.rep.Tags, t)
		c.r.update(func(p *Progress) { p.TagsDeleted++ })
	}
	for i, m := range plan.Manifests {
		if i%batch == 0 {
			if err := c.checkLease(ctx); err != nil {
				return err
			}
		}
		// A manifest pushed again since the snapshot (by digest or by a
		// tag) has a rewritten revision link: it is wanted again.
		fi, err := c.drv.Stat(ctx, revisionLinkPath(m.Repo, m.Digest))
		if isNotFound(err) {
			delete(inv.Repos[m.Repo].Revisions, m.Digest)
			continue
		}
		if err != nil {
			return fmt.Errorf("retention: re-checking %s@%s: %w", m.Repo, m.Digest, err)
		}
		if !fi.ModTime().Equal(m.PushedAt) {
			c.rep.SkippedManifests = append(c.rep.SkippedManifests, m)
			continue
		}
		if err := c.r.deleter.DeleteManifest(ctx, m.Repo, m.Digest); err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		delete(inv.Repos[m.Repo].Revisions, m.Digest)
		c.rep.Manifests = append(c.rep.Manifests, m)
		c.r.update(func(p *Progress) { p.ManifestsDel++ })
	}
	return nil
}

// readBlobs walks the blob store.
func (c *collection) readBlobs(ctx context.Context) (map[digest.Digest]BlobInfo, error) {
	blobs := map[digest.Digest]BlobInfo{}
	err := walkFiles(ctx, c.drv, blobsRoot, func(fi storage.FileInfo) error {
		if d, ok := blobFromDataPath(fi.Path()); ok {
			blobs[d] = BlobInfo{Size: fi.Size(), ModTime: fi.ModTime()}
			if len(blobs)%1000 == 0 {
				c.r.update(func(p *Progress) { p.BlobsScanned = len(blobs) })
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading blob store: %w", err)
	}
	c.r.update(func(p *Progress) { p.BlobsScanned = len(blobs) })
	return blobs, nil
}

// sweep deletes the unmarked blobs. The order is what makes it safe under
// concurrent pushes (see Guard and docs/gc.md): the pending set first,
// then a fresh read of every link, then deletion, then the set goes.
func (c *collection) sweep(ctx context.Context, inv *Inventory, marked map[digest.Digest]bool, blobs map[digest.Digest]BlobInfo) error {
	c.rep.BlobsTotal = len(blobs)
	candidates := SweepCandidates(blobs, marked, inv, c.cutoff)
	c.r.update(func(p *Progress) { p.Candidates = len(candidates) })
	if c.dry {
		cand := map[digest.Digest]bool{}
		for _, d := range candidates {
			cand[d] = true
			c.rep.Blobs = append(c.rep.Blobs, BlobDeletion{Digest: d, Size: blobs[d].Size})
			c.rep.BytesFreed += blobs[d].Size
		}
		c.rep.LayerLinks = danglingLinks(inv, marked, cand, blobs, c.cutoff)
		return nil
	}

	// Dangling links (to blobs absent from the store) are deleted under
	// the same protection as blobs: their digests join the pending set,
	// so a push that uploads such a blob meanwhile is refused or seen.
	dangling := danglingLinks(inv, marked, nil, blobs, c.cutoff)
	if len(candidates) == 0 && len(dangling) == 0 {
		return nil
	}
	protected := map[digest.Digest]bool{}
	for _, l := range dangling {
		protected[l.Digest] = true
	}
	for _, d := range candidates {
		protected[d] = true
	}
	// The pending set before the re-check; it goes once every deletion is
	// done, or on the way out whatever happens.
	token := c.lease.Token()
	if err := c.checkLease(ctx); err != nil {
		return err
	}
	if err := writePendingSet(ctx, c.drv, token, sortedKeys(protected)); err != nil {
		return err
	}
	defer func() {
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := removePendingSet(bg, c.drv, token); err != nil {
			c.log.Warn("leaving the gc pending set behind; the next run removes it", "err", err)
		}
	}()

	// The re-check: every link as it is now, after the pending set.
	if err := c.checkLease(ctx); err != nil {
		return err
	}
	inv2, err := readInventory(ctx, c.drv)
	if err != nil {
		return fmt.Errorf("re-checking links: %w", err)
	}
	marked2, err := Mark(ctx, inv2, c.refs.refs)
	if err != nil {
		return fmt.Errorf("re-marking: %w", err)
	}
	candBlobs := make(map[digest.Digest]BlobInfo, len(candidates))
	for _, d := range candidates {
		candBlobs[d] = blobs[d]
	}
	final := SweepCandidates(candBlobs, marked2.Marked, inv2, c.cutoff)
	var finalDangling []RepoDigest
	for _, l := range danglingLinks(inv2, marked2.Marked, nil, blobs, c.cutoff) {
		if protected[l.Digest] {
			finalDangling = append(finalDangling, l)
		}
	}
	still := map[digest.Digest]bool{}
	for _, d := range final {
		still[d] = true
	}
	for _, l := range finalDangling {
		still[l.Digest] = true
	}
	for _, d := range candidates {
		if !still[d] {
			c.rep.BlobsSpared = append(c.rep.BlobsSpared, d)
		}
	}
	if len(still) < len(protected) {
		// Shrinking the set lets pushes of the spared blobs through
		// sooner; a set only ever shrinks while it exists.
		if err := writePendingSet(ctx, c.drv, token, sortedKeys(still)); err != nil {
			return err
		}
	}

	linksOf := map[digest.Digest][]string{}
	for _, name := range inv2.RepoNames() {
		for d, t := range inv2.Repos[name].Layers {
			if t.Before(c.cutoff) {
				linksOf[d] = append(linksOf[d], name)
			}
		}
	}
	for start := 0; start < len(final); start += c.r.cfg.BatchSize {
		if err := c.checkLease(ctx); err != nil {
			return err
		}
		batch := final[start:min(start+c.r.cfg.BatchSize, len(final))]
		// Deletions are independent and latency-bound on every backend:
		// a few in flight cut the sweep's wall time several times over.
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(deleteWorkers)
		for _, d := range batch {
			g.Go(func() error { return c.deleteBlob(gctx, d, linksOf[d]) })
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	slices.SortFunc(c.rep.Blobs, func(a, b BlobDeletion) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	slices.Sort(c.rep.BlobsSpared)

	for i, l := range finalDangling {
		if i%c.r.cfg.BatchSize == 0 {
			if err := c.checkLease(ctx); err != nil {
				return err
			}
		}
		if _, err := c.drv.Stat(ctx, blobDataPath(l.Digest)); !isNotFound(err) {
			continue // uploaded meanwhile, or a storage error: leave it
		}
		if err := c.deleteLinks(ctx, l.Digest, []string{l.Repo}); err != nil {
			return err
		}
	}
	return nil
}

func sortedKeys(m map[digest.Digest]bool) []digest.Digest {
	out := make([]digest.Digest, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// deleteWorkers is how many blob deletions a sweep has in flight.
const deleteWorkers = 8

// deleteBlob deletes one swept blob and its old layer links, unless the
// data was written again since the cutoff.
func (c *collection) deleteBlob(ctx context.Context, d digest.Digest, links []string) error {
	fi, err := c.drv.Stat(ctx, blobDataPath(d))
	switch {
	case isNotFound(err):
		// Gone already; its links still dangle.
	case err != nil:
		return fmt.Errorf("re-checking blob %s: %w", d, err)
	case !fi.ModTime().Before(c.cutoff):
		c.mu.Lock()
		c.rep.BlobsSpared = append(c.rep.BlobsSpared, d)
		c.mu.Unlock()
		return nil
	default:
		if err := c.drv.Delete(ctx, blobDir(d)); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting blob %s: %w", d, err)
		}
		// The piece metainfo the origin stored at the push or a seeder
		// stored on first request goes with its blob; should the blob be
		// pushed again, a seeder computes it anew.
		if err := c.drv.Delete(ctx, metainfo.StoragePath(d)); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting the metainfo of blob %s: %w", d, err)
		}
		c.mu.Lock()
		c.rep.Blobs = append(c.rep.Blobs, BlobDeletion{Digest: d, Size: fi.Size()})
		c.rep.BytesFreed += fi.Size()
		c.mu.Unlock()
		c.r.update(func(p *Progress) { p.BlobsDeleted++ })
	}
	return c.deleteLinks(ctx, d, links)
}

// deleteLinks removes the _layers links of a deleted blob, as registry:2's
// garbage-collect does, except links written after the cutoff: they belong
// to a push that CheckReferences will fail.
func (c *collection) deleteLinks(ctx context.Context, d digest.Digest, repos []string) error {
	for _, repo := range repos {
		p := layerLinkPath(repo, d)
		fi, err := c.drv.Stat(ctx, p)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("re-checking layer link %s: %w", p, err)
		}
		if !fi.ModTime().Before(c.cutoff) {
			continue
		}
		if err := c.drv.Delete(ctx, path.Dir(p)); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting layer link %s: %w", p, err)
		}
		c.mu.Lock()
		c.rep.LayerLinks = append(c.rep.LayerLinks, RepoDigest{Repo: repo, Digest: d})
		c.mu.Unlock()
	}
	return nil
}

// danglingLinks lists the old, unmarked layer links whose blob is deleted
// (in deleted) or absent from the blob store.
func danglingLinks(inv *Inventory, marked, deleted map[digest.Digest]bool, blobs map[digest.Digest]BlobInfo, cutoff time.Time) []RepoDigest {
	var out []RepoDigest
	for _, name := range inv.RepoNames() {
		for d, t := range inv.Repos[name].Layers {
			_, present := blobs[d]
			if marked[d] || !t.Before(cutoff) || (present && !deleted[d]) {
				continue
			}
			out = append(out, RepoDigest{Repo: name, Digest: d})
		}
	}
	return out
}

// purgeUploads removes upload sessions started longer than UploadMaxAge
// ago. An unreadable startedat keeps the session, as in registry:2.
func (c *collection) purgeUploads(ctx context.Context, inv *Inventory) error {
	limit := c.r.now().Add(-time.Duration(c.r.cfg.UploadMaxAge))
	n := 0
	for _, name := range inv.RepoNames() {
		for _, id := range inv.Repos[name].Uploads {
			b, err := c.drv.GetContent(ctx, path.Join(uploadDir(name, id), "startedat"))
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("reading upload %s in %s: %w", id, name, err)
			}
			started, err := time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
			if err != nil || !started.Before(limit) {
				continue
			}
			if !c.dry {
				if n%c.r.cfg.BatchSize == 0 {
					if err := c.checkLease(ctx); err != nil {
						return err
					}
				}
				if err := c.drv.Delete(ctx, uploadDir(name, id)); err != nil && !isNotFound(err) {
					return fmt.Errorf("purging upload %s in %s: %w", id, name, err)
				}
			}
			n++
			c.rep.Uploads = append(c.rep.Uploads, UploadPurge{Repo: name, ID: id, StartedAt: started})
		}
	}
	return nil
}
