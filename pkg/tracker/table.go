package tracker

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/cespare/xxhash/v2"
)

// Table is the tracker's peer table: for each blob, the peers that announced
// it, each with an expiry. It is sharded by the xxhash of the digest so that
// announces for different blobs rarely contend on one lock. It is safe for
// concurrent use.
//
// Entries are kept small because a busy tracker holds one per (peer, blob):
// a fleet of 5,000 hosts caching 200 layers each is a million entries.
type Table struct {
	shards []shard
	limits Limits
	// entries and blobs count entries and blobs across shards, for the
	// gauges and the limits, without taking every shard lock. Shards
	// check the limits against them without a global lock, so concurrent
	// announces may overshoot a limit by a few entries, never more.
	entries atomic.Int64
	blobs   atomic.Int64
}

// Limits cap the table, so that announces (forged ones included, on a
// tracker without mTLS) cannot grow it without bound. Zero means no limit.
// Only new entries are kept out: re-announces of an entry, and removals,
// always go through.
type Limits struct {
	// PeersPerBlob caps the entries of one blob. Origin seeders are not
	// counted against it: they are few, and the source of every piece.
	PeersPerBlob int
	// Blobs caps the number of blobs in the table.
	Blobs int
	// Entries caps the (peer, blob) entries of the whole table.
	Entries int
}

// ShedReason is the limit that kept an announce's new entry out of the
// table, the reason label of shoal_tracker_shed_total.
type ShedReason uint8

// What the limits did to an announce.
const (
	// NotShed: recorded, or a re-announce of a recorded entry.
	NotShed ShedReason = iota
	// ShedBlobFull: the blob has Limits.PeersPerBlob entries.
	ShedBlobFull
	// ShedEntries: the table has Limits.Entries entries.
	ShedEntries
	// ShedBlobs: the blob is new and the table has Limits.Blobs blobs.
	ShedBlobs
	numShedReasons
)

var shedLabels = [numShedReasons]string{NotShed: "", ShedBlobFull: "blob_full", ShedEntries: "entries", ShedBlobs: "blobs"}

// String is the reason's metric label.
func (r ShedReason) String() string { return shedLabels[r] }

type shard struct {
	mu    sync.Mutex
	blobs map[string]*swarm
	// rnd is only used under mu: a rand.Rand is not safe for concurrent use,
	// and one per shard avoids a global lock.
	rnd *rand.Rand
	// cands and rank are reused under mu so that ranking an announce's
	// candidates allocates nothing.
	cands []cand
	rank  ranking
}

// cand is an entry copied out of a swarm while an announce ranks it.
type cand struct {
	id string
	e  entry
}

type swarm struct {
	peers map[string]entry // by peer id
}

// entry is one (peer, blob) record. Strings that repeat across many entries
// (the locality label) are interned.
type entry struct {
	addr     string
	ip       netip.Addr
	locality unique.Handle[string]
	expires  int64 // unix nanoseconds
	pieces   uint32
	complete bool
	origin   bool
}

// Bounds on the candidates one announce ranks; see Table.Announce.
const (
	candidatesPerSlot = 8
	minCandidates     = 256
)

// NewTable returns an empty table with the given number of shards (at
// least 1) and limits. newRand, if not nil, supplies each shard's random
// source, for tests that need a reproducible hand-out order.
func NewTable(shards int, limits Limits, newRand func() *rand.Rand) *Table {
	if shards < 1 {
		shards = 1
	}
	if newRand == nil {
		newRand = func() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }
	}
	t := &Table{shards: make([]shard, shards), limits: limits}
	for i := range t.shards {
		t.shards[i].blobs = make(map[string]*swarm)
		t.shards[i].rnd = newRand()
	}
	return t
}

func (t *Table) shard(digest string) *shard {
	return &t.shards[xxhash.Sum64String(digest)%uint64(len(t.shards))]
}

// Announce records p as a holder of the blob until now+ttl and returns the
// peers that pol selects for it, computed under the same lock so that the
// answer reflects the announce. The returned slice is the caller's.
// In swarms larger than max(8×limit, 256) the ranking runs over a random
// sample of that size plus every origin, so that an announce costs bounded
// work however popular the blob.
// A complete asker gets no peers: it only uploads, and seeders re-announce
// every cached blob, so answering them would be wasted work.
//
// A new entry that the limits keep out is not recorded (shed says which
// limit); the asker is still answered from the blob's entries, since the
// swarm it wants to join exists. When the blob itself is new and the table
// is full, there is nothing to answer with: refused is set, and the caller
// should send the asker elsewhere.
func (t *Table) Announce(digest string, p Peer, ttl time.Duration, now time.Time, pol Policy) (peers []Peer, shed ShedReason, refused bool) {
	shed, refused = t.announce(digest, p, ttl, now, pol, func(_, n int, id string, e *entry) {
		if peers == nil {
			peers = make([]Peer, 0, n)
		}
		peers = append(peers, e.peer(id))
	})
	return peers, shed, refused
}

// admit returns the limit that keeps a new entry for p out of sw (nil for a
// new blob), or NotShed. Called under sw's shard lock.
func (t *Table) admit(sw *swarm, p *Peer) ShedReason {
	switch {
	case sw == nil && t.limits.Blobs > 0 && t.blobs.Load() >= int64(t.limits.Blobs):
		return ShedBlobs
	case t.limits.Entries > 0 && t.entries.Load() >= int64(t.limits.Entries):
		return ShedEntries
	case sw != nil && !p.Origin && t.limits.PeersPerBlob > 0 && len(sw.peers) >= t.limits.PeersPerBlob:
		return ShedBlobFull
	}
	return NotShed
}

// announce is Announce handing the selected peers, best first, to visit
// (i of n, under the shard lock) rather than building a slice, so that the
// server can turn them straight into its answer.
func (t *Table) announce(digest string, p Peer, ttl time.Duration, now time.Time, pol Policy, visit func(i, n int, id string, e *entry)) (shed ShedReason, refused bool) {
	s := t.shard(digest)
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := s.blobs[digest]
	if sw == nil || !sw.has(p.ID) {
		if shed = t.admit(sw, &p); shed != NotShed && sw == nil {
			return shed, true
		}
	}
	if sw == nil {
		sw = &swarm{peers: make(map[string]entry, 1)}
		s.blobs[digest] = sw
		t.blobs.Add(1)
	}
	record := shed == NotShed
	var loc unique.Handle[string]
	if p.Locality != "" {
		loc = unique.Make(p.Locality)
	}
	// The entry's id (its map key) and address share one allocation, so that
	// handing the peer out reads one cache line rather than two (those reads
	// miss the cache in a large table), and the GC has one object fewer to
	// mark per entry. The request's strings are short-lived.
	idAddr := p.ID + p.Addr
	myID := idAddr[:len(p.ID)]
	mine := entry{
		addr:     idAddr[len(p.ID):],
		ip:       p.IP,
		locality: loc,
		expires:  now.Add(ttl).UnixNano(),
		pieces:   uint32(p.Pieces),
		complete: p.Complete,
		origin:   p.Origin,
	}
	if p.Complete {
		if !record {
			return shed, false
		}
		if _, ok := sw.peers[p.ID]; !ok {
			t.entries.Add(1)
		}
		sw.peers[myID] = mine
		return shed, false
	}

	// The asker's own entry is out of the map while the others are ranked,
	// so that the loop needs no comparison of ids: each would read a key
	// string that is rarely in cache, and those reads were the costliest
	// part of an announce.
	n := len(sw.peers)
	delete(sw.peers, p.ID)
	existed := len(sw.peers) < n
	nowNano := now.UnixNano()
	switch live := record && mine.expires > nowNano; {
	case live && !existed:
		t.entries.Add(1)
	case !live && existed:
		t.entries.Add(-1)
	}

	maxCandidates := max(candidatesPerSlot*pol.Limit, minCandidates)
	near := pol.nearTo(Asker{ID: p.ID, IP: p.IP, Locality: p.Locality})
	idxBits := keyIndexBits(len(sw.peers))
	cands, r := s.cands[:0], &s.rank
	*r = ranking{limit: max(pol.Limit, 0), agentTop: r.agentTop[:0], orgTop: r.orgTop[:0]}
	for id, e := range sw.peers {
		if e.expires <= nowNano {
			// Expired entries never reach an asker even if the sweep
			// has not run yet.
			delete(sw.peers, id)
			t.entries.Add(-1)
			continue
		}
		// In a swarm of thousands, ranking everyone on every announce is
		// wasted work: past a multiple of the limit, candidates are a
		// sample (map iteration starts at a random point) plus every
		// origin, which MinOrigins needs.
		if r.agents+r.origins >= maxCandidates && !e.origin || pol.Limit <= 0 {
			continue
		}
		g := groupOf(e.origin, e.complete)
		if g != groupOrigin && !near.entry(&e, loc) {
			g++
		}
		// Only candidates that rank among the best so far are copied out.
		if r.add(g, rankKey(g, int(e.pieces), s.rnd.Uint64(), len(cands), idxBits)) {
			cands = append(cands, cand{id: id, e: e})
		}
	}
	if record && mine.expires > nowNano {
		sw.peers[myID] = mine
	}
	// Keep the grown buffer for the next announce; Sweep clears it so that
	// it does not pin the strings of departed peers.
	s.cands = cands[:0]
	if pol.Limit <= 0 {
		return shed, false
	}
	agentKeys, originKeys := pol.pick(r)
	mask := uint64(1)<<idxBits - 1
	total := len(agentKeys) + len(originKeys)
	for i, k := range agentKeys {
		c := &cands[k&mask]
		visit(i, total, c.id, &c.e)
	}
	for i, k := range originKeys {
		c := &cands[k&mask]
		visit(len(agentKeys)+i, total, c.id, &c.e)
	}
	return shed, false
}

func (sw *swarm) has(id string) bool {
	_, ok := sw.peers[id]
	return ok
}

// entry is nearAsker.peer for a table entry; loc is the asker's interned
// locality label.
func (n *nearAsker) entry(e *entry, loc unique.Handle[string]) bool {
	if n.locality != "" && e.locality != (unique.Handle[string]{}) {
		return e.locality == loc
	}
	return n.sameNetwork(e.ip)
}

func (e entry) peer(id string) Peer {
	p := Peer{ID: id, Addr: e.addr, IP: e.ip, Complete: e.complete, Origin: e.origin, Pieces: int(e.pieces)}
	if e.locality != (unique.Handle[string]{}) {
		p.Locality = e.locality.Value()
	}
	return p
}

// Remove drops a peer's entry for a blob, as on EVENT_STOPPED.
func (t *Table) Remove(digest, peerID string) {
	s := t.shard(digest)
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := s.blobs[digest]
	if sw == nil {
		return
	}
	if _, ok := sw.peers[peerID]; ok {
		delete(sw.peers, peerID)
		t.entries.Add(-1)
	}
	if len(sw.peers) == 0 {
		delete(s.blobs, digest)
		t.blobs.Add(-1)
	}
}

// Peers returns the live entries for a blob, in no particular order. It is
// meant for debugging and tests; announces use Announce.
func (t *Table) Peers(digest string, now time.Time) []Peer {
	s := t.shard(digest)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Peer
	if sw := s.blobs[digest]; sw != nil {
		for id, e := range sw.peers {
			if e.expires > now.UnixNano() {
				out = append(out, e.peer(id))
			}
		}
	}
	return out
}

// Sweep removes every entry that expired at or before now, and blobs left
// without peers, one shard at a time so that announces keep flowing. It
// returns the number of entries removed.
func (t *Table) Sweep(now time.Time) int {
	nowNano := now.UnixNano()
	removed, emptied := 0, 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for d, sw := range s.blobs {
			for id, e := range sw.peers {
				if e.expires <= nowNano {
					delete(sw.peers, id)
					removed++
				}
			}
			if len(sw.peers) == 0 {
				delete(s.blobs, d)
				emptied++
			}
		}
		// Drop the reuse buffer's references so swept strings can be freed.
		clear(s.cands[:cap(s.cands)])
		s.mu.Unlock()
	}
	t.entries.Add(int64(-removed))
	t.blobs.Add(int64(-emptied))
	return removed
}

// Len returns the number of (peer, blob) entries, including expired ones
// not yet swept.
func (t *Table) Len() int { return int(t.entries.Load()) }

// Blobs returns the number of blobs in the table, including blobs whose
// entries have all expired but not been swept.
func (t *Table) Blobs() int { return int(t.blobs.Load()) }
