package scheduler

import (
	"cmp"
	"slices"
	"time"
)

// Next returns what to do at now: cancels and blacklistings caused by the
// events since the last call and by timeouts, new requests, and whether the
// blob is done. The caller sends every request and cancel; requests count
// as in flight from now on.
func (s *Scheduler) Next(now time.Time) Actions {
	s.expire(now)
	a := Actions{Cancels: s.cancels, Blacklisted: s.blacklisted}
	s.cancels, s.blacklisted = nil, nil
	if s.missing == 0 {
		a.Done = true
		return a
	}
	s.rehome(now, &a)
	s.assign(now, &a)
	s.endgame(now, &a)
	return a
}

// rehome takes requests waiting at an origin back once a healthy agent
// has the piece (its Have arrived): the request goes to that agent if it
// has a free slot, else the piece waits for one like any piece agents
// hold. The origin's egress is what the swarm exists to save, and a
// request queued at a busy origin behind other agents' costs it a whole
// piece. The origin request is cancelled; if the origin was already
// sending, the rest of the piece is saved.
func (s *Scheduler) rehome(now time.Time, a *Actions) {
	if s.originInFlight == 0 {
		return
	}
	free := s.freeAgents(now)
	for i := range s.pieces {
		pc := &s.pieces[i]
		if pc.avail == 0 || pc.failures >= s.cfg.OriginAfterFailures {
			continue
		}
		k := slices.IndexFunc(pc.requests, func(r request) bool { return r.peer.origin })
		if k < 0 || !s.healthyHolder(i) {
			continue
		}
		o := pc.requests[k].peer
		s.dropRequest(i, o)
		a.Cancels = append(a.Cancels, Cancel{Peer: o.id, Piece: i})
		if p := s.bestAgent(i, free); p != nil && p.healthy() {
			s.send(now, i, p, a)
			if p.full() {
				free = slices.DeleteFunc(free, func(q *peer) bool { return q == p })
			}
		}
	}
}

// healthyHolder reports whether a healthy agent holds piece i.
func (s *Scheduler) healthyHolder(i int) bool {
	for _, p := range s.peers {
		if !p.origin && p.healthy() && p.has.Has(i) {
			return true
		}
	}
	return false
}

// candidate is a piece to request, with its sort key.
type candidate struct {
	piece int
	// window is the distance past the nearest reader's piece, or
	// ReaderWindow for pieces outside every reader's window.
	window int
	avail  int
	prio   uint32
}

// less orders candidates: pieces in a reader's window first (nearest
// first), then rarest first, ties in this scheduler's random order.
func (x candidate) less(y candidate) bool {
	if x.window != y.window {
		return x.window < y.window
	}
	if x.avail != y.avail {
		return x.avail < y.avail
	}
	if x.prio != y.prio {
		return x.prio < y.prio
	}
	return x.piece < y.piece
}

// candidateHeap pops the most urgent candidate first. A heap rather than a
// sort: after one delivery frees one slot, Next needs only the first few
// pieces, and building the heap is linear. Hand-written rather than
// container/heap, whose interface boxes every popped element.
type candidateHeap []candidate

func (h candidateHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h candidateHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].less(h[l]) {
			m = r
		}
		if !h[m].less(h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func (h *candidateHeap) pop() candidate {
	old := *h
	c := old[0]
	n := len(old) - 1
	old[0] = old[n]
	*h = old[:n]
	h.down(0)
	return c
}

// assign requests the missing pieces nobody is fetching, most urgent first.
func (s *Scheduler) assign(now time.Time, a *Actions) {
	free := s.freeAgents(now)
	originSlots := s.originSlots(now)
	if len(free) == 0 && originSlots == 0 {
		return
	}
	h := s.candidateHeap()
	for len(*h) > 0 && (len(free) > 0 || originSlots > 0) {
		c := h.pop()
		p := s.pick(now, c.piece, free)
		if p == nil {
			continue
		}
		s.send(now, c.piece, p, a)
		if p.origin {
			originSlots--
		} else if p.full() {
			free = slices.DeleteFunc(free, func(q *peer) bool { return q == p })
		}
	}
}

// candidateHeap returns the missing pieces with no request, as a heap.
func (s *Scheduler) candidateHeap() *candidateHeap {
	cands := s.candidates[:0]
	for i := range s.pieces {
		pc := &s.pieces[i]
		if len(pc.requests) > 0 || s.have.Has(i) {
			continue
		}
		c := candidate{piece: i, window: s.cfg.ReaderWindow, avail: pc.avail, prio: pc.prio}
		for _, r := range s.readers {
			if d := i - r.piece; d >= 0 && d < c.window {
				c.window = d
			}
		}
		cands = append(cands, c)
	}
	s.candidates = cands
	h := candidateHeap(cands)
	h.init()
	return &h
}

// endgame duplicates requests for the last pieces once all are in flight.
func (s *Scheduler) endgame(now time.Time, a *Actions) {
	if s.missing > s.cfg.EndgameThreshold || s.cfg.EndgameMaxRequests < 2 {
		return
	}
	var pending []int
	for i := range s.pieces {
		if s.have.Has(i) {
			continue
		}
		if len(s.pieces[i].requests) == 0 {
			return // some missing piece is not even requested once yet
		}
		pending = append(pending, i)
	}
	// Pieces with the fewest copies requested first, so the spare slots
	// spread over the tail.
	slices.SortFunc(pending, func(x, y int) int {
		if c := cmp.Compare(len(s.pieces[x].requests), len(s.pieces[y].requests)); c != 0 {
			return c
		}
		return cmp.Compare(s.pieces[x].prio, s.pieces[y].prio)
	})
	free := s.freeAgents(now)
	for _, i := range pending {
		for len(s.pieces[i].requests) < s.cfg.EndgameMaxRequests {
			p := s.bestAgent(i, free)
			if p == nil {
				break
			}
			s.send(now, i, p, a)
			if p.full() {
				free = slices.DeleteFunc(free, func(q *peer) bool { return q == p })
			}
		}
	}
}

// pick chooses the peer to request piece i from, or nil to wait: a healthy
// agent with a free slot; else, when no healthy agent holds the piece (or
// it keeps failing), an origin; else, when only agents that timed out
// lately hold it, one of them. While a healthy holder exists, the piece
// waits for it rather than go to a peer that is timing out.
func (s *Scheduler) pick(now time.Time, i int, free []*peer) *peer {
	best := s.bestAgent(i, free)
	if best != nil && best.healthy() {
		return best
	}
	healthyHolders := 0
	for _, p := range s.peers {
		if !p.origin && p.healthy() && p.has.Has(i) {
			healthyHolders++
		}
	}
	if healthyHolders > 0 && s.pieces[i].failures < s.cfg.OriginAfterFailures {
		return nil
	}
	if now.Before(s.pieces[i].originAfter) {
		// An origin just sent it to another agent: wait for that agent's
		// Have, or for the origin's retry time.
		if healthyHolders == 0 {
			return best
		}
		return nil
	}
	if o := s.bestOrigin(now); o != nil {
		return o
	}
	if healthyHolders == 0 {
		return best
	}
	return nil
}

// bestAgent returns the agent among free (agents with a free slot) to ask
// for piece i: one holding it and not already asked for it, healthy first,
// then least loaded, then most useful so far.
func (s *Scheduler) bestAgent(i int, free []*peer) *peer {
	requested := s.pieces[i].requests
	var best *peer
	for _, p := range free {
		if !p.has.Has(i) || (best != nil && !better(p, best)) {
			continue
		}
		if len(requested) > 0 && slices.ContainsFunc(requested, func(r request) bool { return r.peer == p }) {
			continue
		}
		best = p
	}
	return best
}

func better(p, q *peer) bool {
	if p.healthy() != q.healthy() {
		return p.healthy()
	}
	if p.inFlight != q.inFlight {
		return p.inFlight < q.inFlight
	}
	return p.stats.Delivered > q.stats.Delivered
}

// bestOrigin returns the least loaded origin that may take a request now.
func (s *Scheduler) bestOrigin(now time.Time) *peer {
	if s.nonOrigin > 0 && s.originInFlight >= s.cfg.MaxOriginInFlight {
		return nil
	}
	var best *peer
	for _, p := range s.peers {
		if !p.origin || p.full() || now.Before(p.busyUntil) {
			continue
		}
		if best == nil || p.inFlight < best.inFlight {
			best = p
		}
	}
	return best
}

// freeAgents returns the agents that may take a request now, in join
// order, in a scratch slice.
func (s *Scheduler) freeAgents(now time.Time) []*peer {
	free := s.free[:0]
	for _, p := range s.peers {
		if !p.origin && !p.full() && !now.Before(p.busyUntil) {
			free = append(free, p)
		}
	}
	s.free = free
	return free
}

// originSlots returns how many more requests origins may take now.
func (s *Scheduler) originSlots(now time.Time) int {
	n := 0
	for _, p := range s.peers {
		if p.origin && !p.full() && !now.Before(p.busyUntil) {
			n += p.limit - p.inFlight
		}
	}
	if s.nonOrigin > 0 {
		n = min(n, max(0, s.cfg.MaxOriginInFlight-s.originInFlight))
	}
	return n
}

func (s *Scheduler) send(now time.Time, i int, p *peer, a *Actions) {
	s.pieces[i].requests = append(s.pieces[i].requests, request{peer: p, sentAt: now})
	p.inFlight++
	if p.origin {
		s.originInFlight++
	}
	a.Requests = append(a.Requests, Request{Peer: p.id, Piece: i})
}
