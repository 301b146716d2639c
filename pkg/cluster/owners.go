package cluster

import (
	"cmp"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Member is one origin node as the cluster sees it.
type Member struct {
	// Name is the node's memberlist name, unique in the cluster. Ownership
	// is hashed on it, so a node that restarts with the same name owns the
	// same blobs (its disk cache stays useful).
	Name string
	// Addr is the node's seeder gRPC address (host:port), from its Meta.
	// Empty when the node runs no seeder.
	Addr string
}

// Owners returns the r members that own digest, best first, by rendezvous
// (highest random weight) hashing: each member scores
// xxhash64(name ‖ 0x00 ‖ digest) and the r highest scores own the blob.
// Every node computes the same owners from the same member list, whatever
// order the list is in; when a node leaves, only the blobs it owned get a
// new owner (the next in their ranking), and the others keep theirs. With
// r <= 0 or r >= len(members), every member is returned, ranked.
//
// xxhash spreads keys here; it is never used for integrity.
func Owners(digest string, members []Member, r int) []Member {
	type scored struct {
		m     Member
		score uint64
	}
	s := make([]scored, len(members))
	for i, m := range members {
		s[i] = scored{m, score(m.Name, digest)}
	}
	slices.SortFunc(s, func(a, b scored) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		// Ties (vanishingly rare) are broken by name so that every node
		// still agrees.
		return cmp.Compare(a.m.Name, b.m.Name)
	})
	if r <= 0 || r > len(s) {
		r = len(s)
	}
	out := make([]Member, r)
	for i := range out {
		out[i] = s[i].m
	}
	return out
}

func score(node, key string) uint64 {
	var h xxhash.Digest
	h.Reset()
	_, _ = h.WriteString(node)
	// A separator keeps ("ab","c") and ("a","bc") apart.
	_, _ = h.Write([]byte{0})
	_, _ = h.WriteString(key)
	return h.Sum64()
}
