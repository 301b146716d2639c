package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

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
		if err := c.clearStaleMarkers(ctx); err != nil {
			return err
		}
	}
	t0 := c.r.now()
	c.rep.MarkStart = t0
	c.cutoff = t0.Add(-time.Duration(c.r.cfg.Grace))
	c.refs = newManifestReader(c.drv)

	c.r.update(func(p *Progress) { p.Phase = PhaseInventory })
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
		c.r.update(func(p *Progress) { p.Phase = PhaseRetention })
		if err := c.retention(ctx, inv); err != nil {
			return err
		}
	}

	c.r.update(func(p *Progress) { p.Phase = PhaseMark })
	marked, err := Mark(ctx, inv, c.refs.refs)
	if err != nil {
		return fmt.Errorf("marking: %w", err)
	}
	c.rep.MissingManifests = marked.Missing
	c.rep.BlobsMarked = len(marked.Marked)
	for _, m := range marked.Missing {
		c.log.Warn("manifest revision without data; skipped as registry:2 does", "repo", m.Repo, "digest", m.Digest)
	}

	c.r.update(func(p *Progress) { p.Phase = PhaseSweep })
	if err := c.sweep(ctx, inv, marked.Marked); err != nil {
		return err
	}

	c.r.update(func(p *Progress) { p.Phase = PhaseUploads })
	return c.purgeUploads(ctx, inv)
}

// clearStaleMarkers removes pending-deletion markers left by a run that
// died: holding the lease, this run is the only one that could own any.
func (c *collection) clearStaleMarkers(ctx context.Context) error {
	var stale []string
	if err := walkFiles(ctx, c.drv, pendingRoot, func(fi storage.FileInfo) error {
		stale = append(stale, fi.Path())
		return nil
	}); err != nil {
		return fmt.Errorf("listing stale gc markers: %w", err)
	}
	for _, p := range stale {
		if err := c.drv.Delete(ctx, p); err != nil && !isNotFound(err) {
			return fmt.Errorf("removing stale gc marker %s: %w", p, err)
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
// concurrent pushes (see CheckReferences and docs/gc.md): markers first,
// then a fresh read of every link, then deletion, then the markers go.
func (c *collection) sweep(ctx context.Context, inv *Inventory, marked map[digest.Digest]bool) error {
	blobs, err := c.readBlobs(ctx)
	if err != nil {
		return err
	}
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

	// Markers for every candidate before the re-check; whatever happens
	// next, the markers of blobs not yet handled are removed on the way out.
	pending := map[digest.Digest]bool{}
	defer func() {
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		for d := range pending {
			if err := removeMarker(bg, c.drv, d); err != nil {
				c.log.Warn("leaving a gc marker behind; the next run removes it", "err", err)
			}
		}
	}()
	for i, d := range candidates {
		if i%c.r.cfg.BatchSize == 0 {
			if err := c.checkLease(ctx); err != nil {
				return err
			}
		}
		pending[d] = true
		if err := writeMarker(ctx, c.drv, d, c.lease.Token()); err != nil {
			return err
		}
	}

	// The re-check: every link as it is now, after the markers.
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
	keep := map[digest.Digest]bool{}
	for _, d := range candidates {
		keep[d] = true
	}
	for _, d := range final {
		delete(keep, d)
	}
	for _, d := range candidates {
		if keep[d] {
			c.rep.BlobsSpared = append(c.rep.BlobsSpared, d)
			if err := removeMarker(ctx, c.drv, d); err != nil {
				return err
			}
			delete(pending, d)
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
	for i, d := range final {
		if i%c.r.cfg.BatchSize == 0 {
			if err := c.checkLease(ctx); err != nil {
				return err
			}
		}
		fi, err := c.drv.Stat(ctx, blobDataPath(d))
		switch {
		case isNotFound(err):
			// Gone already; its links still dangle.
		case err != nil:
			return fmt.Errorf("re-checking blob %s: %w", d, err)
		case !fi.ModTime().Before(c.cutoff):
			c.rep.BlobsSpared = append(c.rep.BlobsSpared, d)
		default:
			if err := c.drv.Delete(ctx, blobDir(d)); err != nil && !isNotFound(err) {
				return fmt.Errorf("deleting blob %s: %w", d, err)
			}
			c.rep.Blobs = append(c.rep.Blobs, BlobDeletion{Digest: d, Size: fi.Size()})
			c.rep.BytesFreed += fi.Size()
			c.r.update(func(p *Progress) { p.BlobsDeleted++ })
		}
		if err := c.deleteLinks(ctx, d, linksOf[d]); err != nil {
			return err
		}
		if err := removeMarker(ctx, c.drv, d); err != nil {
			return err
		}
		delete(pending, d)
	}

	// Links to blobs that were already absent from the blob store.
	for i, l := range danglingLinks(inv2, marked2.Marked, nil, blobs, c.cutoff) {
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
		c.rep.LayerLinks = append(c.rep.LayerLinks, RepoDigest{Repo: repo, Digest: d})
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
