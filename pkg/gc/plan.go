package gc

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

// Snapshot is what retention decides on: every repository's tags and
// manifest revisions as they were read from storage.
type Snapshot struct {
	Repos []RepoSnapshot
}

// RepoSnapshot is one repository in a Snapshot.
type RepoSnapshot struct {
	Name      string
	Tags      []TagInfo
	Manifests []ManifestInfo
}

// TagInfo is a tag and the manifest it points at.
type TagInfo struct {
	Name   string
	Digest digest.Digest
	// PushedAt is when the tag's current link was last written.
	PushedAt time.Time
}

// ManifestInfo is a manifest revision of a repository.
type ManifestInfo struct {
	Digest digest.Digest
	// PushedAt is when the revision link was last written.
	PushedAt time.Time
	Refs     ManifestRefs
}

// Plan is what retention deletes.
type Plan struct {
	Tags      []TagDeletion
	Manifests []ManifestDeletion
}

// TagDeletion is a tag retention removes.
type TagDeletion struct {
	Repo     string        `json:"repo"`
	Tag      string        `json:"tag"`
	Digest   digest.Digest `json:"digest"`
	PushedAt time.Time     `json:"pushedAt"`
	Reason   string        `json:"reason"`
}

// ManifestDeletion is a manifest revision retention removes.
type ManifestDeletion struct {
	Repo     string        `json:"repo"`
	Digest   digest.Digest `json:"digest"`
	PushedAt time.Time     `json:"pushedAt"`
	Reason   string        `json:"reason"`
}

// PlanRetention applies the first rule matching each repository to the
// snapshot as of now. It is pure: the same input gives the same plan.
//
// Tags: KeepTags patterns protect a tag; the other tags are ranked newest
// first and the KeepLast newest are kept; of the rest, those older than
// MaxAge go (all of them when MaxAge is 0 and KeepLast is set).
//
// Manifests: a manifest stays if a kept tag reaches it, directly, as a child
// of a kept index, or as a referrer (subject) of a kept manifest. A manifest
// nothing in the repository points at (untagged, no parent index, no subject
// present) is a root of its own until it is older than UntaggedMaxAge.
// Everything else goes, so the manifests whose last tag retention removes go
// with their tags, as `DELETE /v2/<name>/manifests/<digest>` would remove them.
func PlanRetention(s Snapshot, rules []Rule, now time.Time) (Plan, error) {
	compiled := make([]Rule, len(rules))
	for i, r := range rules {
		r.keep = nil
		if err := r.compile(); err != nil {
			return Plan{}, fmt.Errorf("retention rule %d: %w", i, err)
		}
		compiled[i] = r
	}
	var p Plan
	for _, repo := range s.Repos {
		i := slices.IndexFunc(compiled, func(r Rule) bool { return r.matchesRepo(repo.Name) })
		if i < 0 {
			continue
		}
		planRepo(&p, repo, &compiled[i], now)
	}
	return p, nil
}

func planRepo(p *Plan, repo RepoSnapshot, r *Rule, now time.Time) {
	manifests := make(map[digest.Digest]*ManifestInfo, len(repo.Manifests))
	for i := range repo.Manifests {
		manifests[repo.Manifests[i].Digest] = &repo.Manifests[i]
	}

	tags := slices.Clone(repo.Tags)
	slices.SortFunc(tags, func(a, b TagInfo) int {
		if c := b.PushedAt.Compare(a.PushedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})

	tagged := map[digest.Digest]bool{}
	var roots []digest.Digest
	rank := 0
	for _, t := range tags {
		tagged[t.Digest] = true
		if r.keepsTag(t.Name) {
			roots = append(roots, t.Digest)
			continue
		}
		rank++
		age := now.Sub(t.PushedAt)
		limited := r.KeepLast > 0 || r.MaxAge > 0
		beyondCount := rank > r.KeepLast
		tooOld := r.MaxAge == 0 || age > time.Duration(r.MaxAge)
		// A tag whose manifest is missing is left alone: deleting it
		// would not free anything and registry:2 would not either.
		if !limited || !beyondCount || !tooOld || manifests[t.Digest] == nil {
			roots = append(roots, t.Digest)
			continue
		}
		reason := fmt.Sprintf("not among the %d newest tags", r.KeepLast)
		if r.MaxAge > 0 {
			reason = fmt.Sprintf("pushed %s ago, older than maxAge %s", age.Round(time.Second), r.MaxAge)
			if r.KeepLast > 0 {
				reason += fmt.Sprintf(" and not among the %d newest tags", r.KeepLast)
			}
		}
		p.Tags = append(p.Tags, TagDeletion{Repo: repo.Name, Tag: t.Name, Digest: t.Digest, PushedAt: t.PushedAt, Reason: reason})
	}

	// Manifests something in the repository points at live or die with it.
	pointedAt := map[digest.Digest]bool{}
	for _, m := range repo.Manifests {
		for _, c := range m.Refs.Children {
			pointedAt[c] = true
		}
		if m.Refs.Subject != "" && manifests[m.Refs.Subject] != nil {
			pointedAt[m.Digest] = true
		}
	}
	for _, m := range repo.Manifests {
		if tagged[m.Digest] || pointedAt[m.Digest] {
			continue
		}
		if r.UntaggedMaxAge == 0 || now.Sub(m.PushedAt) <= time.Duration(r.UntaggedMaxAge) {
			roots = append(roots, m.Digest)
		}
	}

	kept := closure(roots, repo.Manifests, manifests)
	for _, m := range repo.Manifests {
		if kept[m.Digest] {
			continue
		}
		reason := "its tags were deleted by retention and nothing kept refers to it"
		switch {
		case !tagged[m.Digest] && !pointedAt[m.Digest]:
			reason = fmt.Sprintf("untagged for longer than untaggedMaxAge %s", r.UntaggedMaxAge)
		case !tagged[m.Digest]:
			reason = "only deleted manifests refer to it"
		}
		p.Manifests = append(p.Manifests, ManifestDeletion{Repo: repo.Name, Digest: m.Digest, PushedAt: m.PushedAt, Reason: reason})
	}
	slices.SortFunc(p.Manifests, func(a, b ManifestDeletion) int {
		return cmp.Or(cmp.Compare(a.Repo, b.Repo), cmp.Compare(a.Digest, b.Digest))
	})
}

// closure returns the manifests reachable from roots through index children
// and from kept subjects to their referrers.
func closure(roots []digest.Digest, all []ManifestInfo, byDigest map[digest.Digest]*ManifestInfo) map[digest.Digest]bool {
	referrers := map[digest.Digest][]digest.Digest{}
	for _, m := range all {
		if m.Refs.Subject != "" {
			referrers[m.Refs.Subject] = append(referrers[m.Refs.Subject], m.Digest)
		}
	}
	kept := map[digest.Digest]bool{}
	queue := slices.Clone(roots)
	for len(queue) > 0 {
		d := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if kept[d] {
			continue
		}
		kept[d] = true
		if m := byDigest[d]; m != nil {
			queue = append(queue, m.Refs.Children...)
		}
		queue = append(queue, referrers[d]...)
	}
	return kept
}
