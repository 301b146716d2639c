// Package tracker keeps track of which peers hold which blobs and hands each
// announcing peer a short list of others to fetch pieces from.
//
// The pieces are: Policy, the pure hand-out decision (which peers, in which
// order); Table, a sharded, TTL'd in-memory peer table; Server, the gRPC
// shoal.tracker.v1.Tracker service with its metrics; and Client, which an
// agent uses to talk to several trackers, choosing one per blob by
// rendezvous hashing and moving to the next on failure.
package tracker

import (
	"cmp"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
)

// Peer is one holder of a blob, as the hand-out policy sees it.
type Peer struct {
	ID   string
	Addr string // host:port of the peer service
	// IP is the peer's address, used to decide whether it is near the asker.
	IP netip.Addr
	// Locality is an optional label (zone, rack); see Policy.Nearby.
	Locality string
	Complete bool
	Origin   bool
	// Pieces is the number of pieces held; meaningful when !Complete.
	Pieces int
}

// Asker is the peer asking for a list.
type Asker struct {
	ID       string
	IP       netip.Addr
	Locality string
}

// Policy decides which peers an asker gets and in which order. It does no
// I/O and keeps no state, so it is tested by tables of cases.
type Policy struct {
	// Limit bounds the list.
	Limit int
	// MinOrigins is how many origin seeders the list keeps even when agents
	// would fill it, so that an agent always knows a source that has every
	// piece.
	MinOrigins int
	// IPv4PrefixBits and IPv6PrefixBits define "same network" for peers
	// without a locality label.
	IPv4PrefixBits int
	IPv6PrefixBits int
}

// Nearby reports whether p is near the asker: when both carry a locality
// label, the labels decide; otherwise both addresses must fall in the same
// IPv4 or IPv6 prefix.
func (pol Policy) Nearby(a Asker, p Peer) bool { return pol.nearTo(a)(p) }

// nearTo returns Nearby for a fixed asker, with the asker's prefix computed
// once rather than for every peer.
func (pol Policy) nearTo(a Asker) func(Peer) bool {
	ai := a.IP.Unmap()
	bits := pol.IPv6PrefixBits
	if ai.Is4() {
		bits = pol.IPv4PrefixBits
	}
	ap, err := ai.Prefix(bits)
	prefixOK := err == nil
	return func(p Peer) bool {
		if a.Locality != "" && p.Locality != "" {
			return a.Locality == p.Locality
		}
		pi := p.IP.Unmap()
		return prefixOK && pi.IsValid() && pi.Is4() == ai.Is4() && ap.Contains(pi)
	}
}

// Groups, best first. See Select for why.
const (
	groupCompleteNear = iota
	groupCompleteFar
	groupPartialNear
	groupPartialFar
	groupOrigin
)

// Select returns at most Limit peers for the asker, best first, never the
// asker itself: complete nearby agents, complete far agents, partial nearby
// agents, partial far agents (partial ones by piece count, most first), then
// origin seeders, of which MinOrigins are kept even when agents would fill
// the list. Complete peers can serve every piece, so they come before
// partial ones; within each, nearby peers come first because their traffic
// is cheaper and faster; origins come last so that the swarm, not the
// origin, serves most of the bytes. Peers that rank equal come in random
// order drawn from rnd, so that askers spread over equal peers instead of
// all picking the same one.
//
// Select does not modify peers; the result is a new slice.
func (pol Policy) Select(peers []Peer, a Asker, rnd *rand.Rand) []Peer {
	if pol.Limit <= 0 {
		return nil
	}
	// Rank small pointer-free keys rather than moving Peers around: the
	// sort then costs no write barriers, which dominated in profiles.
	type key struct {
		group  uint8
		pieces int32
		tie    uint32 // random: breaks ties between equal peers
		i      int32
	}
	near := pol.nearTo(a)
	keys := make([]key, 0, len(peers))
	agents := 0
	for i, p := range peers {
		if p.ID == a.ID {
			continue
		}
		var g uint8
		switch {
		case p.Origin:
			g = groupOrigin
		case p.Complete:
			g = groupCompleteNear
		default:
			g = groupPartialNear
		}
		if g != groupOrigin {
			agents++
			if !near(p) {
				g++
			}
		}
		k := key{group: g, tie: rnd.Uint32(), i: int32(i)}
		if g == groupPartialNear || g == groupPartialFar {
			k.pieces = int32(min(p.Pieces, math.MaxInt32))
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y key) int {
		if c := cmp.Compare(x.group, y.group); c != 0 {
			return c
		}
		if c := cmp.Compare(y.pieces, x.pieces); c != 0 {
			return c
		}
		return cmp.Compare(x.tie, y.tie)
	})

	origins := len(keys) - agents
	keepOrigins := min(pol.MinOrigins, origins, pol.Limit)
	nAgents := min(agents, pol.Limit-keepOrigins)
	nOrigins := min(origins, pol.Limit-nAgents)
	out := make([]Peer, 0, nAgents+nOrigins)
	for _, k := range keys[:nAgents] {
		out = append(out, peers[k.i])
	}
	for _, k := range keys[agents : agents+nOrigins] {
		out = append(out, peers[k.i])
	}
	return out
}
