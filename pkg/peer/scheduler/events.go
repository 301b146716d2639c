package scheduler

import (
	"fmt"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// Event is an input to Handle: one of PeerJoined, PeerHave, PeerLeft,
// PieceReceived, RequestRejected, Tick, ReaderAt.
type Event interface{ event() }

// PeerJoined: an Exchange stream with Peer completed its handshake.
type PeerJoined struct {
	Peer PeerID
	// Bitfield is the peer's pieces; ignored when Complete. Nil means none.
	Bitfield *metainfo.Bitfield
	Complete bool
	// Origin marks an origin seeder (is_origin in the tracker's answer): it
	// holds every piece and is used only as the fallback.
	Origin bool
	// Incarnation identifies the peer's process (a random id it sends
	// with its handshake); empty when unknown. A peer blacklisted as
	// Unresponsive that joins again with a different, non-empty
	// incarnation is a restarted process and is taken back; a Corrupt
	// one never is.
	Incarnation string
}

// PeerHave: Peer sent Have{Piece}.
type PeerHave struct {
	Peer  PeerID
	Piece int
}

// PeerLeft: the stream with Peer ended. Its requests are forgotten.
type PeerLeft struct {
	Peer PeerID
}

// PieceReceived: Peer's copy of Piece was assembled and verified. OK false
// means it failed metainfo.Verify; OK true means it passed and was stored.
type PieceReceived struct {
	Peer  PeerID
	Piece int
	OK    bool
}

// RequestRejected: Peer answered a request of Piece with Reject. NotHeld
// is REASON_NOT_HELD; AtPeers is REASON_AT_PEERS (an origin gave the piece
// to another agent, and asks to be asked again for it only after
// RetryAfter); otherwise the peer was busy.
type RequestRejected struct {
	Peer       PeerID
	Piece      int
	NotHeld    bool
	AtPeers    bool
	RetryAfter time.Duration
}

// PeerProgress: Peer is delivering bytes of a piece requested from it,
// not yet the whole piece. Its requests' PieceTimeout counts from now: on
// a slow link a peer sending a piece for longer than PieceTimeout is slow,
// not unresponsive, and cutting it off throws away what it sent.
type PeerProgress struct {
	Peer PeerID
}

// Tick: time passed. Handle expires timed out requests; Next does too, so a
// loop that calls Next after every event only needs Tick to notice
// timeouts while nothing else happens.
type Tick struct{}

// ReaderAt: the streaming reader Reader is at byte Offset. A negative
// offset or one at or past the end removes the reader. Several readers
// (clients streaming the same blob) each get their window.
type ReaderAt struct {
	Reader int
	Offset int64
}

func (PeerJoined) event()      {}
func (PeerHave) event()        {}
func (PeerLeft) event()        {}
func (PeerProgress) event()    {}
func (PieceReceived) event()   {}
func (RequestRejected) event() {}
func (Tick) event()            {}
func (ReaderAt) event()        {}

// Handle applies ev, which happened at now. An error means the event was
// refused (the peer is unknown, over the limit, blacklisted, or broke the
// protocol); the caller should close that peer's stream and report
// PeerLeft if the peer had joined.
func (s *Scheduler) Handle(now time.Time, ev Event) error {
	switch ev := ev.(type) {
	case PeerJoined:
		return s.peerJoined(now, ev)
	case PeerProgress:
		p, ok := s.byID[ev.Peer]
		if !ok {
			return fmt.Errorf("handling progress: %w: %q", ErrUnknownPeer, ev.Peer)
		}
		p.lastProgress = now
		p.stats.ConsecutiveTimeouts = 0
		return nil
	case PeerHave:
		p, err := s.peer(ev.Peer, ev.Piece)
		if err != nil {
			return fmt.Errorf("handling Have: %w", err)
		}
		if !p.has.Has(ev.Piece) {
			p.has.Set(ev.Piece)
			if !p.origin {
				s.pieces[ev.Piece].avail++
			}
		}
	case PeerLeft:
		p, ok := s.byID[ev.Peer]
		if !ok {
			return fmt.Errorf("handling peer leaving: %w: %q", ErrUnknownPeer, ev.Peer)
		}
		s.remove(p)
	case PieceReceived:
		return s.pieceReceived(now, ev)
	case RequestRejected:
		p, err := s.peer(ev.Peer, ev.Piece)
		if err != nil {
			return fmt.Errorf("handling Reject: %w", err)
		}
		if !s.dropRequest(ev.Piece, p) {
			return nil // cancelled or timed out meanwhile
		}
		p.stats.Rejects++
		if ev.AtPeers {
			// Not a failure of anyone: the piece is on its way into the
			// swarm. Only this piece waits; the origin stays available
			// for the others.
			wait := ev.RetryAfter
			if wait <= 0 {
				wait = s.cfg.BusyBackoff
			}
			s.pieces[ev.Piece].originAfter = now.Add(wait)
			return nil
		}
		s.pieces[ev.Piece].failures++
		if ev.NotHeld {
			if p.has.Has(ev.Piece) && !p.origin {
				s.pieces[ev.Piece].avail--
			}
			p.has.Clear(ev.Piece)
		} else {
			s.busy(now, p)
		}
	case Tick:
		s.expire(now)
	case ReaderAt:
		s.readerAt(ev)
	default:
		return fmt.Errorf("handling event: unknown event %T", ev)
	}
	return nil
}

func (s *Scheduler) peerJoined(now time.Time, ev PeerJoined) error {
	if b, ok := s.blacklist[ev.Peer]; ok {
		if !b.forgives(ev.Incarnation) {
			return fmt.Errorf("peer %q joining: %w (%s)", ev.Peer, ErrBlacklisted, b.reason)
		}
		delete(s.blacklist, ev.Peer)
	}
	if _, ok := s.byID[ev.Peer]; ok {
		return fmt.Errorf("peer %q joining: %w", ev.Peer, ErrDuplicatePeer)
	}
	if !ev.Origin && s.nonOrigin >= s.cfg.MaxPeers {
		return fmt.Errorf("peer %q joining: %w (%d)", ev.Peer, ErrTooManyPeers, s.cfg.MaxPeers)
	}
	n := len(s.pieces)
	var has *metainfo.Bitfield
	switch {
	case ev.Origin || ev.Complete:
		has = metainfo.NewBitfield(n)
		has.SetAll()
	case ev.Bitfield == nil:
		has = metainfo.NewBitfield(n)
	case ev.Bitfield.Len() != n:
		return fmt.Errorf("peer %q joining: %w: bitfield of %d pieces, want %d", ev.Peer, ErrBadPiece, ev.Bitfield.Len(), n)
	default:
		has, _ = metainfo.ParseBitfield(ev.Bitfield.Bytes(), n)
	}
	p := &peer{id: ev.Peer, origin: ev.Origin, incarnation: ev.Incarnation, has: has, lastProgress: now,
		limit: s.cfg.MaxInFlightPerPeer}
	s.peers = append(s.peers, p)
	s.byID[p.id] = p
	if !p.origin {
		s.nonOrigin++
		for i := range s.pieces {
			if has.Has(i) {
				s.pieces[i].avail++
			}
		}
	}
	return nil
}

// peer returns a joined peer, checking the piece index it is about.
func (s *Scheduler) peer(id PeerID, i int) (*peer, error) {
	p, ok := s.byID[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPeer, id)
	}
	if i < 0 || i >= len(s.pieces) {
		return nil, fmt.Errorf("%w: piece %d from %q, blob has %d", ErrBadPiece, i, id, len(s.pieces))
	}
	return p, nil
}

func (s *Scheduler) pieceReceived(now time.Time, ev PieceReceived) error {
	p, err := s.peer(ev.Peer, ev.Piece)
	if err != nil {
		return fmt.Errorf("handling piece: %w", err)
	}
	if !ev.OK {
		s.blacklistPeer(p, Corrupt)
		return nil
	}
	s.dropRequest(ev.Piece, p)
	p.limit = min(p.limit+1, s.cfg.MaxInFlightPerPeer)
	p.stats.Delivered++
	p.stats.ConsecutiveTimeouts = 0
	p.lastProgress = now
	if !p.has.Has(ev.Piece) {
		// It sent the piece, so it holds it, whatever its bitfield said.
		p.has.Set(ev.Piece)
		if !p.origin {
			s.pieces[ev.Piece].avail++
		}
	}
	if s.have.Has(ev.Piece) {
		return nil // an endgame duplicate or a late answer after a cancel
	}
	s.have.Set(ev.Piece)
	s.missing--
	pc := &s.pieces[ev.Piece]
	for _, r := range pc.requests {
		r.peer.inFlight--
		if r.peer.origin {
			s.originInFlight--
		}
		// The peer may have been busy sending the copy cancelled here; its
		// other requests get their full time from now.
		r.peer.lastProgress = now
		s.cancels = append(s.cancels, Cancel{Peer: r.peer.id, Piece: ev.Piece})
	}
	pc.requests = pc.requests[:0]
	return nil
}

// busy handles p's BUSY answer to a request already dropped: p keeps the
// requests it has (it is sending or queueing them) and gets no more until
// one is delivered; with none, it rests for a jittered BusyBackoff.
func (s *Scheduler) busy(now time.Time, p *peer) {
	if p.inFlight > 0 {
		p.limit = p.inFlight
		return
	}
	p.limit = 1
	half := s.cfg.BusyBackoff / 2
	p.busyUntil = now.Add(half + time.Duration(s.rng.Int64N(int64(half)+1)))
}

// dropRequest forgets the request of piece i from p, reporting whether
// there was one.
func (s *Scheduler) dropRequest(i int, p *peer) bool {
	pc := &s.pieces[i]
	for k, r := range pc.requests {
		if r.peer == p {
			pc.requests = slices.Delete(pc.requests, k, k+1)
			p.inFlight--
			if p.origin {
				s.originInFlight--
			}
			return true
		}
	}
	return false
}

// remove forgets p and its requests.
func (s *Scheduler) remove(p *peer) {
	if p.inFlight > 0 {
		for i := range s.pieces {
			s.dropRequest(i, p)
		}
	}
	if !p.origin {
		s.nonOrigin--
		for i := range s.pieces {
			if p.has.Has(i) {
				s.pieces[i].avail--
			}
		}
	}
	delete(s.byID, p.id)
	s.peers = slices.DeleteFunc(s.peers, func(q *peer) bool { return q == p })
}

func (s *Scheduler) blacklistPeer(p *peer, why Reason) {
	s.remove(p)
	s.blacklist[p.id] = ban{reason: why, incarnation: p.incarnation}
	s.blacklisted = append(s.blacklisted, Blacklisting{Peer: p.id, Reason: why})
}

// expire cancels requests whose peer made no progress for PieceTimeout.
func (s *Scheduler) expire(now time.Time) {
	if s.cfg.PieceTimeout <= 0 {
		return
	}
	var dead []*peer
	for i := range s.pieces {
		pc := &s.pieces[i]
		for k := 0; k < len(pc.requests); {
			r := pc.requests[k]
			start := r.sentAt
			if r.peer.lastProgress.After(start) {
				start = r.peer.lastProgress
			}
			if now.Sub(start) < s.cfg.PieceTimeout {
				k++
				continue
			}
			pc.requests = slices.Delete(pc.requests, k, k+1)
			pc.failures++
			p := r.peer
			p.inFlight--
			if p.origin {
				s.originInFlight--
			}
			p.stats.Timeouts++
			p.stats.ConsecutiveTimeouts++
			s.cancels = append(s.cancels, Cancel{Peer: p.id, Piece: i})
			// An origin is never dropped as unresponsive: it is the source of
			// last resort, and on a slow link its pieces are merely slow. A
			// dead origin ends its stream, which the caller reports as
			// PeerLeft.
			if p.stats.ConsecutiveTimeouts == s.cfg.MaxTimeouts && !p.origin {
				dead = append(dead, p)
			}
		}
	}
	for _, p := range dead {
		// No point cancelling on a stream about to be closed.
		s.cancels = slices.DeleteFunc(s.cancels, func(c Cancel) bool { return c.Peer == p.id })
		s.blacklistPeer(p, Unresponsive)
	}
}

func (s *Scheduler) readerAt(ev ReaderAt) {
	s.readers = slices.DeleteFunc(s.readers, func(r reader) bool { return r.id == ev.Reader })
	if ev.Offset < 0 || ev.Offset >= s.size || s.pieceLength <= 0 {
		return
	}
	s.readers = append(s.readers, reader{id: ev.Reader, piece: int(ev.Offset / s.pieceLength)})
}
