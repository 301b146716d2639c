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
	s.assign(now, &a)
	s.endgame(now, &a)
	return a
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

// assign requests the missing pieces nobody is fetching, most urgent first.
func (s *Scheduler) assign(now time.Time, a *Actions) {
	if s.freeSlots(now) == 0 {
		return
	}
	cands := s.sortedCandidates()
	for _, c := range cands {
		p := s.pick(now, c.piece)
		if p == nil {
			continue
		}
		s.send(now, c.piece, p, a)
		if s.freeSlots(now) == 0 {
			return
		}
	}
}

// sortedCandidates lists the missing pieces with no request: pieces in a
// reader's window first (nearest first), then rarest first, ties in this
// scheduler's random order.
func (s *Scheduler) sortedCandidates() []candidate {
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
	slices.SortFunc(cands, func(x, y candidate) int {
		if c := cmp.Compare(x.window, y.window); c != 0 {
			return c
		}
		if c := cmp.Compare(x.avail, y.avail); c != 0 {
			return c
		}
		if c := cmp.Compare(x.prio, y.prio); c != 0 {
			return c
		}
		return cmp.Compare(x.piece, y.piece)
	})
	s.candidates = cands
	return cands
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
	for _, i := range pending {
		for len(s.pieces[i].requests) < s.cfg.EndgameMaxRequests {
			p, _ := s.bestAgent(now, i)
			if p == nil {
				break
			}
			s.send(now, i, p, a)
		}
	}
}

// pick chooses the peer to request piece i from, or nil to wait: a healthy
// agent with a free slot; else an origin, if the piece may go to one; else
// an agent that timed out lately.
func (s *Scheduler) pick(now time.Time, i int) *peer {
	best, healthyHolders := s.bestAgent(now, i)
	if best != nil && best.healthy() {
		return best
	}
	pc := &s.pieces[i]
	if pc.avail == 0 || healthyHolders == 0 || pc.failures >= s.cfg.OriginAfterFailures {
		if o := s.bestOrigin(now); o != nil {
			return o
		}
	}
	return best
}

// bestAgent returns the non-origin peer with a free slot to ask for piece
// i (healthy first, then least loaded, then most useful so far), and the
// number of healthy agents holding i whether free or not.
func (s *Scheduler) bestAgent(now time.Time, i int) (best *peer, healthyHolders int) {
	requested := s.pieces[i].requests
	for _, p := range s.peers {
		if p.origin || !p.has.Has(i) {
			continue
		}
		if p.healthy() {
			healthyHolders++
		}
		if p.inFlight >= s.cfg.MaxInFlightPerPeer || now.Before(p.busyUntil) ||
			slices.ContainsFunc(requested, func(r request) bool { return r.peer == p }) {
			continue
		}
		if best == nil || better(p, best) {
			best = p
		}
	}
	return best, healthyHolders
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
		if !p.origin || p.inFlight >= s.cfg.MaxInFlightPerPeer || now.Before(p.busyUntil) {
			continue
		}
		if best == nil || p.inFlight < best.inFlight {
			best = p
		}
	}
	return best
}

// freeSlots returns how many more requests could be sent now, ignoring
// which pieces each peer holds.
func (s *Scheduler) freeSlots(now time.Time) int {
	free, originFree := 0, 0
	for _, p := range s.peers {
		if now.Before(p.busyUntil) || p.inFlight >= s.cfg.MaxInFlightPerPeer {
			continue
		}
		if p.origin {
			originFree += s.cfg.MaxInFlightPerPeer - p.inFlight
		} else {
			free += s.cfg.MaxInFlightPerPeer - p.inFlight
		}
	}
	if s.nonOrigin > 0 {
		originFree = min(originFree, max(0, s.cfg.MaxOriginInFlight-s.originInFlight))
	}
	return free + originFree
}

func (s *Scheduler) send(now time.Time, i int, p *peer, a *Actions) {
	s.pieces[i].requests = append(s.pieces[i].requests, request{peer: p, sentAt: now})
	p.inFlight++
	if p.origin {
		s.originInFlight++
	}
	a.Requests = append(a.Requests, Request{Peer: p.id, Piece: i})
}
