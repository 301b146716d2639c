package tracker

import (
	"cmp"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Rank orders trackers for a blob by rendezvous (highest random weight)
// hashing: each tracker scores xxhash(tracker, digest) and the highest score
// comes first. Every agent computes the same order from the same list, so
// all announces for a blob meet at one tracker; when it is down they all
// move to the same second one; and adding or removing a tracker only moves
// the blobs that ranked it first. xxhash is for spreading keys here, never
// for integrity.
func Rank(digest string, trackers []string) []string {
	type scored struct {
		addr  string
		score uint64
	}
	s := make([]scored, len(trackers))
	for i, t := range trackers {
		s[i] = scored{t, rendezvousScore(t, digest)}
	}
	slices.SortFunc(s, func(a, b scored) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.addr, b.addr)
	})
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].addr
	}
	return out
}

func rendezvousScore(node, key string) uint64 {
	var h xxhash.Digest
	h.Reset()
	h.WriteString(node)
	// A separator keeps ("ab","c") and ("a","bc") apart.
	h.Write([]byte{0})
	h.WriteString(key)
	return h.Sum64()
}
