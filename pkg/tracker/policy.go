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
func (pol Policy) Nearby(a Asker, p Peer) bool {
	if a.Locality != "" && p.Locality != "" {
		return a.Locality == p.Locality
	}
	ai, pi := a.IP.Unmap(), p.IP.Unmap()
	if !ai.IsValid() || !pi.IsValid() || ai.Is4() != pi.Is4() {
		return false
	}
	bits := pol.IPv6PrefixBits
	if ai.Is4() {
		bits = pol.IPv4PrefixBits
	}
	ap, err1 := ai.Prefix(bits)
	pp, err2 := pi.Prefix(bits)
	return err1 == nil && err2 == nil && ap == pp
}

// Tiers, best first. Complete peers can serve every piece, so they come
// before partial ones; within each, nearby peers come first because their
// traffic is cheaper and faster. Origins come last so that the swarm, not
// the origin, serves most of the bytes.
const (
	tierCompleteNear = iota
	tierCompleteFar
	tierPartialNear
	tierPartialFar
)

// Select returns at most Limit peers for the asker, best first, never the
// asker itself: complete nearby agents, complete far agents, partial nearby
// agents, partial far agents (partial ones by piece count, most first), then
// origin seeders, of which MinOrigins are kept even when agents would fill
// the list. Peers that rank equal come in random order drawn from rnd, so
// that askers spread over equal peers instead of all picking the same one.
//
// Select reorders and overwrites peers in place and returns a prefix of it.
func (pol Policy) Select(peers []Peer, a Asker, rnd *rand.Rand) []Peer {
	if pol.Limit <= 0 {
		return peers[:0]
	}
	// Drop the asker, then move origins behind the agents. Swapping keeps
	// every element; the order is randomized below anyway.
	for i := 0; i < len(peers); {
		if peers[i].ID == a.ID {
			peers[i] = peers[len(peers)-1]
			peers = peers[:len(peers)-1]
			continue
		}
		i++
	}
	agents := 0
	for i := range peers {
		if !peers[i].Origin {
			peers[i], peers[agents] = peers[agents], peers[i]
			agents++
		}
	}
	origins := peers[agents:]

	// Shuffle first and sort stably: equal peers keep a random order.
	rnd.Shuffle(agents, func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	rnd.Shuffle(len(origins), func(i, j int) { origins[i], origins[j] = origins[j], origins[i] })
	tier := func(p Peer) int {
		t := tierCompleteNear
		if !p.Complete {
			t = tierPartialNear
		}
		if !pol.Nearby(a, p) {
			t++
		}
		return t
	}
	slices.SortStableFunc(peers[:agents], func(x, y Peer) int {
		if c := cmp.Compare(tier(x), tier(y)); c != 0 {
			return c
		}
		if x.Complete {
			return 0
		}
		return cmp.Compare(y.Pieces, x.Pieces)
	})

	keepOrigins := min(pol.MinOrigins, len(origins), pol.Limit)
	nAgents := min(agents, pol.Limit-keepOrigins)
	nOrigins := min(len(origins), pol.Limit-nAgents)
	copy(peers[nAgents:], origins[:nOrigins])
	return peers[:nAgents+nOrigins]
}
