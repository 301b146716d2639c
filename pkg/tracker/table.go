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
	// entries counts live entries across shards, for the peers gauge,
	// without taking every shard lock.
	entries atomic.Int64
}

type shard struct {
	mu    sync.Mutex
	blobs map[string]*swarm
	// rnd is only used under mu: a rand.Rand is not safe for concurrent use,
	// and one per shard avoids a global lock.
	rnd *rand.Rand
	// buf is reused under mu to hand the policy a slice without allocating
	// on every announce.
	buf []Peer
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
// least 1). newRand, if not nil, supplies each shard's random source, for
// tests that need a reproducible hand-out order.
func NewTable(shards int, newRand func() *rand.Rand) *Table {
	if shards < 1 {
		shards = 1
	}
	if newRand == nil {
		newRand = func() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }
	}
	t := &Table{shards: make([]shard, shards)}
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
func (t *Table) Announce(digest string, p Peer, ttl time.Duration, now time.Time, pol Policy) []Peer {
	s := t.shard(digest)
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := s.blobs[digest]
	if sw == nil {
		sw = &swarm{peers: make(map[string]entry, 1)}
		s.blobs[digest] = sw
	}
	if _, ok := sw.peers[p.ID]; !ok {
		t.entries.Add(1)
	}
	var loc unique.Handle[string]
	if p.Locality != "" {
		loc = unique.Make(p.Locality)
	}
	sw.peers[p.ID] = entry{
		addr:     p.Addr,
		ip:       p.IP,
		locality: loc,
		expires:  now.Add(ttl).UnixNano(),
		pieces:   uint32(p.Pieces),
		complete: p.Complete,
		origin:   p.Origin,
	}
	if p.Complete {
		return nil
	}

	nowNano := now.UnixNano()
	maxCandidates := max(candidatesPerSlot*pol.Limit, minCandidates)
	cands := s.buf[:0]
	for id, e := range sw.peers {
		if e.expires <= nowNano {
			// Expired entries never reach an asker even if the sweep
			// has not run yet.
			delete(sw.peers, id)
			t.entries.Add(-1)
			continue
		}
		if id == p.ID {
			continue
		}
		// In a swarm of thousands, ranking everyone on every announce is
		// wasted work: past a multiple of the limit, candidates are a
		// sample (map iteration starts at a random point) plus every
		// origin, which MinOrigins needs.
		if len(cands) < maxCandidates || e.origin {
			cands = append(cands, e.peer(id))
		}
	}
	out := pol.Select(cands, Asker{ID: p.ID, IP: p.IP, Locality: p.Locality}, s.rnd)
	// Keep the grown buffer for the next announce; Sweep clears it so that
	// it does not pin the strings of departed peers.
	s.buf = cands[:0]
	return out
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
	removed := 0
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
			}
		}
		// Drop the reuse buffer's references so swept strings can be freed.
		clear(s.buf[:cap(s.buf)])
		s.mu.Unlock()
	}
	t.entries.Add(int64(-removed))
	return removed
}

// Len returns the number of (peer, blob) entries, including expired ones
// not yet swept.
func (t *Table) Len() int { return int(t.entries.Load()) }

// Blobs returns the number of blobs with at least one entry.
func (t *Table) Blobs() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.blobs)
		s.mu.Unlock()
	}
	return n
}
