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
	"math"
	"math/bits"
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
	n := pol.nearTo(a)
	return n.peer(p)
}

// nearAsker is Nearby for a fixed asker, with the asker's prefix computed
// once rather than for every peer.
type nearAsker struct {
	locality string
	ip       netip.Addr // unmapped
	prefix   netip.Prefix
	prefixOK bool
}

func (pol Policy) nearTo(a Asker) nearAsker {
	ai := a.IP.Unmap()
	bits := pol.IPv6PrefixBits
	if ai.Is4() {
		bits = pol.IPv4PrefixBits
	}
	ap, err := ai.Prefix(bits)
	return nearAsker{locality: a.Locality, ip: ai, prefix: ap, prefixOK: err == nil}
}

func (n *nearAsker) peer(p Peer) bool {
	if n.locality != "" && p.Locality != "" {
		return n.locality == p.Locality
	}
	return n.sameNetwork(p.IP)
}

func (n *nearAsker) sameNetwork(ip netip.Addr) bool {
	pi := ip.Unmap()
	return n.prefixOK && pi.IsValid() && pi.Is4() == n.ip.Is4() && n.prefix.Contains(pi)
}

// Groups, best first. See Select for why.
const (
	groupCompleteNear = iota
	groupCompleteFar
	groupPartialNear
	groupPartialFar
	groupOrigin
)

// groupOf is a candidate's group if it is near the asker; the caller adds
// one for an agent that is not (nearness does not matter for origins).
func groupOf(origin, complete bool) uint8 {
	switch {
	case origin:
		return groupOrigin
	case complete:
		return groupCompleteNear
	default:
		return groupPartialNear
	}
}

// Candidates are ranked as plain uint64 keys, so that ranking is a sort of
// pointer-free integers (no comparison callbacks, no write barriers): the
// group in the top 3 bits, then for partial agents the piece count inverted
// (most pieces first), then a random tie-breaker, then the candidate's index
// in the low idxBits bits, which makes keys distinct and leads back to the
// candidate.
const (
	keyGroupShift  = 61
	keyPiecesShift = 29
	keyLowBits     = 29 // tie-breaker and index
)

// keyIndexBits is the number of low key bits that hold indexes below n.
// n is bounded by memory long before it reaches 2^29.
func keyIndexBits(n int) uint { return uint(min(bits.Len(uint(n)), keyLowBits)) }

func rankKey(group uint8, pieces int, tie uint64, idx int, idxBits uint) uint64 {
	k := uint64(group) << keyGroupShift
	if group == groupPartialNear || group == groupPartialFar {
		k |= uint64(math.MaxUint32-uint32(min(max(pieces, 0), math.MaxUint32))) << keyPiecesShift
	}
	// A shift by 64 or more yields 0: no tie bits when the index needs all.
	k |= tie >> (64 - (keyLowBits - idxBits)) << idxBits
	return k | uint64(idx)
}

// ranking keeps, of the candidates' keys it is given, the best limit
// agents and the best limit origins, each sorted best first, and counts
// them all: enough for pick. A full sort of every candidate is not needed
// for a list of a few dozen.
type ranking struct {
	limit            int
	agents, origins  int
	agentTop, orgTop []uint64
}

// add ranks one candidate and reports whether it is among the best so far
// (the caller keeps the candidate only then).
func (r *ranking) add(group uint8, key uint64) bool {
	if group == groupOrigin {
		r.origins++
		return keepTop(&r.orgTop, r.limit, key)
	}
	r.agents++
	return keepTop(&r.agentTop, r.limit, key)
}

// keepTop inserts key into top, kept sorted and at most limit long, unless
// limit keys are already smaller.
func keepTop(top *[]uint64, limit int, key uint64) bool {
	t := *top
	if len(t) == limit {
		if limit == 0 || key >= t[limit-1] {
			return false
		}
		t = t[:limit-1]
	}
	i := len(t)
	for i > 0 && t[i-1] > key {
		i--
	}
	t = slices.Insert(t, i, key)
	*top = t
	return true
}

// pick returns the keys handed out: the best agents, then the best origins,
// MinOrigins of which are kept even when agents would fill the list.
func (pol Policy) pick(r *ranking) (agentKeys, originKeys []uint64) {
	keepOrigins := min(pol.MinOrigins, r.origins, pol.Limit)
	nAgents := min(r.agents, pol.Limit-keepOrigins)
	nOrigins := min(r.origins, pol.Limit-nAgents)
	return r.agentTop[:nAgents], r.orgTop[:nOrigins]
}

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
	near := pol.nearTo(a)
	idxBits := keyIndexBits(len(peers))
	r := ranking{limit: pol.Limit}
	for i, p := range peers {
		if p.ID == a.ID {
			continue
		}
		g := groupOf(p.Origin, p.Complete)
		if g != groupOrigin && !near.peer(p) {
			g++
		}
		r.add(g, rankKey(g, p.Pieces, rnd.Uint64(), i, idxBits))
	}
	agentKeys, originKeys := pol.pick(&r)
	mask := uint64(1)<<idxBits - 1
	out := make([]Peer, 0, len(agentKeys)+len(originKeys))
	for _, k := range agentKeys {
		out = append(out, peers[k&mask])
	}
	for _, k := range originKeys {
		out = append(out, peers[k&mask])
	}
	return out
}
