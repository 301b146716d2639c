package swarm

// A download's candidates: the addresses it may dial (configured seeders,
// the blob's owners, peers the tracker names), dialed while there is room,
// retried with backoff (scheduler.DialRetry), and refreshed by announces.

import (
	"time"

	"github.com/shoal-dev/shoal/pkg/peer/scheduler"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

type candState int

const (
	candIdle candState = iota
	candDialing
	candConnected
)

// candidate is an address to dial: a configured seeder, or a peer from the
// tracker.
type candidate struct {
	addr     string
	id       string
	origin   bool
	state    candState
	failures int
	retryAt  time.Time
}

// maintain dials candidates while there is room, and announces when due.
func (dl *download) maintain(now time.Time) {
	s := dl.s
	agents := 0
	for _, c := range dl.peers {
		agents += boolInt(!c.origin)
	}
	// Agents first, then origins once scheduler.DialOrigins lets them.
	dl.dialCandidates(now, agents, false)
	if scheduler.DialOrigins(s.tracker != nil, now.Sub(dl.started), s.cfg.DialTimeout, dl.firstAnswer, agents, dl.dialing) {
		dl.dialCandidates(now, agents, true)
	}
	dl.announceIfDue(now)
}

// dialCandidates dials the idle candidates that are origins (or agents,
// while fewer than MaxPeersPerBlob, agents of them joined, are joined or
// being dialed).
func (dl *download) dialCandidates(now time.Time, agents int, origins bool) {
	s := dl.s
	for _, cand := range dl.cands {
		if cand.origin != origins || cand.state != candIdle || now.Before(cand.retryAt) {
			continue
		}
		if cand.id != "" {
			if _, joined := dl.peers[scheduler.PeerID(cand.id)]; joined {
				continue
			}
			if dl.banned(cand.id) {
				delete(dl.cands, cand.addr)
				continue
			}
		}
		if !cand.origin {
			if agents+dl.dialing >= s.cfg.MaxPeersPerBlob {
				continue
			}
			dl.dialing++
		}
		cand.state = candDialing
		s.wg.Add(1)
		go func(addr string, origin bool) {
			defer s.wg.Done()
			s.dial(dl, addr, origin)
		}(cand.addr, cand.origin)
	}
}

// announceIfDue announces the download to the tracker when due.
func (dl *download) announceIfDue(now time.Time) {
	s := dl.s
	if s.tracker != nil && !dl.announcing && !now.Before(dl.nextAnnounce) {
		dl.announcing = true
		ev := trackerpb.Event_EVENT_UNSPECIFIED
		if !dl.startedSent {
			ev = trackerpb.Event_EVENT_STARTED
		}
		have := dl.sched.Have()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			resp, err := s.announce(s.ctx, dl.d, ev, have)
			dl.post(evAnnounced{resp: resp, err: err}, nil)
		}()
	}
}

func (dl *download) announced(now time.Time, ev evAnnounced) {
	s := dl.s
	dl.announcing = false
	dl.firstAnswer = true
	next := s.cfg.DownloadAnnounceInterval
	if ev.err != nil {
		dl.nextAnnounce = now.Add(next)
		return
	}
	dl.startedSent = true
	if iv := ev.resp.GetInterval().AsDuration(); iv > 0 && iv < next {
		next = iv
	}
	dl.nextAnnounce = now.Add(next)
	for _, p := range ev.resp.GetPeers() {
		id, addr := p.GetPeerId(), p.GetAddr()
		if id == s.cfg.PeerID || addr == "" {
			continue
		}
		if _, joined := dl.peers[scheduler.PeerID(id)]; joined {
			continue
		}
		if dl.banned(id) {
			continue
		}
		if cand, ok := dl.cands[addr]; ok {
			cand.id = id
			continue
		}
		dl.cands[addr] = &candidate{addr: addr, id: id, origin: p.GetIsOrigin()}
	}
	dl.maintain(now)
}

// retry schedules another dial of cand after a failure, with backoff;
// agents that keep failing are forgotten (the tracker will name them again
// if they come back), origins never.
func (dl *download) retry(now time.Time, cand *candidate) {
	cand.state = candIdle
	cand.failures++
	forget, wait := scheduler.DialRetry(cand.origin, cand.failures)
	if forget {
		delete(dl.cands, cand.addr)
		dl.s.pool.drop(cand.addr)
		return
	}
	cand.retryAt = now.Add(wait)
}
