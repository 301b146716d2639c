package gc

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

// RefLookup returns the references of a stored manifest; it returns an
// error wrapping errManifestMissing when the manifest's data is absent.
type RefLookup func(ctx context.Context, d digest.Digest) (ManifestRefs, error)

// MarkResult is the set of reachable blobs and what marking skipped.
type MarkResult struct {
	Marked map[digest.Digest]bool
	// Missing are revisions whose manifest data is absent; registry:2
	// skips them too.
	Missing []RepoDigest
}

// RepoDigest names a digest in a repository.
type RepoDigest struct {
	Repo   string        `json:"repo"`
	Digest digest.Digest `json:"digest"`
}

// Mark returns every blob a manifest revision of any repository reaches:
// the manifest itself, its config, layers and artifact blobs, and the
// manifests of an index. It follows registry:2's garbage-collect with
// --delete-untagged=false: every revision is a root, tagged or not, and a
// subject is not kept alive by its referrers. Index children are marked but
// not descended into, because registry:2 only descends into a child that
// has a revision in the repository, and such a child is a root itself.
func Mark(ctx context.Context, inv *Inventory, lookup RefLookup) (MarkResult, error) {
	res := MarkResult{Marked: map[digest.Digest]bool{}}
	for _, name := range inv.RepoNames() {
		repo := inv.Repos[name]
		revs := make([]digest.Digest, 0, len(repo.Revisions))
		for d := range repo.Revisions {
			revs = append(revs, d)
		}
		slices.Sort(revs)
		for _, d := range revs {
			if err := ctx.Err(); err != nil {
				return MarkResult{}, err
			}
			refs, err := lookup(ctx, d)
			if errors.Is(err, errManifestMissing) {
				res.Missing = append(res.Missing, RepoDigest{Repo: name, Digest: d})
				continue
			}
			if err != nil {
				return MarkResult{}, err
			}
			res.Marked[d] = true
			for _, b := range refs.Blobs {
				res.Marked[b] = true
			}
			for _, c := range refs.Children {
				res.Marked[c] = true
			}
		}
	}
	return res, nil
}

// BlobInfo is a blob in the blob store.
type BlobInfo struct {
	Size    int64
	ModTime time.Time
}

// SweepCandidates returns the blobs GC may delete: not marked, data written
// before cutoff, and not linked into any repository after cutoff (a push
// that has uploaded or mounted the blob and has yet to push its manifest).
// cutoff is the mark's start minus the grace period. The result is sorted.
func SweepCandidates(blobs map[digest.Digest]BlobInfo, marked map[digest.Digest]bool, inv *Inventory, cutoff time.Time) []digest.Digest {
	recentlyLinked := map[digest.Digest]bool{}
	for _, r := range inv.Repos {
		for d, t := range r.Layers {
			if !t.Before(cutoff) {
				recentlyLinked[d] = true
			}
		}
		for d, t := range r.Revisions {
			if !t.Before(cutoff) {
				recentlyLinked[d] = true
			}
		}
	}
	var out []digest.Digest
	for d, b := range blobs {
		if marked[d] || recentlyLinked[d] || !b.ModTime.Before(cutoff) {
			continue
		}
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}
