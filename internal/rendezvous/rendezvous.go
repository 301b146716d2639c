// Package rendezvous is Shoal's one copy of rendezvous (highest random
// weight) hashing: every node scores each (node, key) pair and the key
// belongs to the highest scores. Every process computes the same order
// from the same list, whatever order the list is in; when a node leaves,
// only the keys it ranked first move (to the next in their ranking). The
// origin cluster picks a blob's owners with it, agents pick the tracker
// and the seeder to ask, and agents pulling together pick the few that
// fetch from the origin at once.
//
// The score is xxhash64(node ‖ 0x00 ‖ key): xxhash spreads keys here and is
// never used for integrity. Changing it moves every blob's owners and
// tracker, so every binary of a cluster must agree on it.
package rendezvous

import (
	"cmp"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Score is node's weight for key; higher ranks first.
func Score(node, key string) uint64 {
	var h xxhash.Digest
	h.Reset()
	_, _ = h.WriteString(node)
	// A separator keeps ("ab","c") and ("a","bc") apart.
	_, _ = h.Write([]byte{0})
	_, _ = h.WriteString(key)
	return h.Sum64()
}

// Rank returns nodes ordered for key, best first. Ties (vanishingly rare)
// are broken by name so that every process still agrees. nodes is not
// modified.
func Rank(key string, nodes []string) []string {
	return RankFunc(key, nodes, func(n string) string { return n })
}

// RankFunc is Rank for items named by name.
func RankFunc[T any](key string, items []T, name func(T) string) []T {
	type scored struct {
		item  T
		name  string
		score uint64
	}
	s := make([]scored, len(items))
	for i, it := range items {
		n := name(it)
		s[i] = scored{it, n, Score(n, key)}
	}
	slices.SortFunc(s, func(a, b scored) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	out := make([]T, len(s))
	for i := range s {
		out[i] = s[i].item
	}
	return out
}

// Above counts the distinct nodes among others that score higher than
// self for key: self is among the n first of the ranking of itself and
// others if Above < n. Duplicates and self itself are not counted.
func Above(key, self string, others []string) int {
	mine := Score(self, key)
	seen := make(map[string]bool, len(others))
	above := 0
	for _, o := range others {
		if o == self || seen[o] {
			continue
		}
		seen[o] = true
		if Score(o, key) > mine {
			above++
		}
	}
	return above
}
