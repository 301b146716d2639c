package scheduler

import (
	"cmp"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/internal/rendezvous"
)

// The origin-egress rules. The Scheduler decides which piece to ask of
// which peer; these decide, once it has chosen an origin, whether and when
// the request really goes out, so that a swarm pulling together sends the
// origin's link each piece about once:
//
//   - only a few agents of a swarm ask the origin at once (Fetcher): the
//     others defer their origin requests (OriginDeferral), because a piece
//     one fetcher takes from the origin reaches them through the swarm;
//   - a deferred request goes out when the swarm stops delivering to this
//     agent, or is answered as busy after half a piece timeout;
//   - a piece already half received from an origin is let finish when the
//     scheduler takes the request back (OriginTakeback);
//   - origins are dialed after the agents the tracker names (DialOrigins);
//   - dials that fail back off, and agents that keep failing are forgotten
//     (DialRetry).
//
// Like the Scheduler they are pure: no goroutines, no clock, no I/O.

// Fetcher reports whether self is one of the fetchers agents that take
// pieces of blob from the origin as soon as the scheduler asks: the
// highest rendezvous scores of (peer id, blob) among self and the agents
// it knows (joined, or named by the tracker). Agents that pull together
// know mostly the same agents, so they agree on the fetchers without
// talking. The others defer their origin requests (OriginDeferral); when
// a fetcher's piece spreads meanwhile, the scheduler moves the request to
// an agent and the deferred one is dropped without reaching the origin.
// Every agent asking the origin for the pieces nobody held yet costs the
// origin several times the layer (docs/benchmarks.md, swarm benchmark).
func Fetcher(self PeerID, blob string, agents []PeerID, fetchers int) bool {
	ids := make([]string, len(agents))
	for i, a := range agents {
		ids[i] = string(a)
	}
	return rendezvous.Above(blob, string(self), ids) < fetchers
}

// OriginDeferral holds back the requests to origins of an agent that is
// not a fetcher while other agents are about. A held request goes out once
// the swarm stops making progress for this agent (no new piece here and no
// Have of a missing piece from an agent for StallAfter), or once no agent
// is joined or being dialed. Held for half the piece timeout while the
// swarm delivers, it is answered as busy instead: the scheduler counts a
// request in flight from when it asked, and drops an origin that lets
// requests time out.
//
// The zero value is not usable; make one with NewOriginDeferral.
type OriginDeferral struct {
	wait, pieceTimeout time.Duration
	held               map[Request]time.Time
	// sent are requests that went to origins, for pieceTime, a moving
	// average of how long an origin takes to deliver a piece.
	sent          map[Request]time.Time
	pieceTime     time.Duration
	swarmProgress time.Time
}

// NewOriginDeferral returns an OriginDeferral that holds requests back
// for at least wait without progress (0 never holds any), and answers
// them as busy after pieceTimeout/2.
func NewOriginDeferral(wait, pieceTimeout time.Duration) *OriginDeferral {
	return &OriginDeferral{
		wait: wait, pieceTimeout: pieceTimeout,
		held: make(map[Request]time.Time),
		sent: make(map[Request]time.Time),
	}
}

// Ask is the scheduler's request r of an origin at now. It reports
// whether to send it now; if not, it is held (see Due). crowded: other
// agents are joined or being dialed; fetcher: this agent is a fetcher
// (Fetcher), asked only when it matters.
func (d *OriginDeferral) Ask(now time.Time, r Request, crowded bool, fetcher func() bool) bool {
	if crowded && d.wait > 0 && !fetcher() {
		d.held[r] = now
		return false
	}
	d.sent[r] = now
	return true
}

// Cancel is the scheduler withdrawing r. It reports whether r was held,
// and so never reached the origin (nothing to withdraw there).
func (d *OriginDeferral) Cancel(r Request) (held bool) {
	delete(d.sent, r)
	if _, ok := d.held[r]; ok {
		delete(d.held, r)
		return true
	}
	return false
}

// Answered: the origin answered r at now, with the piece (delivered true,
// verified) or otherwise (a reject, a corrupt piece).
func (d *OriginDeferral) Answered(now time.Time, r Request, delivered bool) {
	at, ok := d.sent[r]
	if !ok {
		return
	}
	delete(d.sent, r)
	if !delivered {
		return
	}
	took := now.Sub(at)
	if d.pieceTime == 0 {
		d.pieceTime = took
	} else {
		d.pieceTime = (3*d.pieceTime + took) / 4
	}
}

// PeerLeft forgets the requests held for, and sent to, peer.
func (d *OriginDeferral) PeerLeft(peer PeerID) {
	for r := range d.held {
		if r.Peer == peer {
			delete(d.held, r)
		}
	}
	for r := range d.sent {
		if r.Peer == peer {
			delete(d.sent, r)
		}
	}
}

// SwarmProgress: an agent announced at now a piece this one lacks; the
// swarm can still serve it without the origin.
func (d *OriginDeferral) SwarmProgress(now time.Time) { d.swarmProgress = now }

// StallAfter is how long without progress makes held requests go out: the
// configured wait, or three times the recent time an origin took to
// deliver a piece if that is longer (a slow origin is not a stalled swarm).
func (d *OriginDeferral) StallAfter() time.Duration {
	return max(d.wait, 3*d.pieceTime)
}

// Held is the number of requests held.
func (d *OriginDeferral) Held() int { return len(d.held) }

// Due takes the held requests whose time has come, in peer and piece
// order: send
// goes to the origin now (and counts as sent), busy is to be handed back
// to the scheduler as a busy RequestRejected. lastPiece is when this agent
// last got a new piece; crowded as for Ask.
func (d *OriginDeferral) Due(now, lastPiece time.Time, crowded bool) (send, busy []Request) {
	if len(d.held) == 0 {
		return nil, nil
	}
	last := lastPiece
	if d.swarmProgress.After(last) {
		last = d.swarmProgress
	}
	stalled := now.Sub(last) >= d.StallAfter()
	for r, at := range d.held {
		switch {
		case !crowded || stalled:
			delete(d.held, r)
			d.sent[r] = now
			send = append(send, r)
		case now.Sub(at) >= d.pieceTimeout/2:
			// The swarm is still delivering: the busy reject a loaded
			// seeder would send, so the scheduler neither times the
			// origin out nor waits on it, and asks again after its busy
			// backoff.
			delete(d.held, r)
			busy = append(busy, r)
		}
	}
	byAge := func(a, b Request) int {
		return cmp.Or(cmp.Compare(a.Peer, b.Peer), cmp.Compare(a.Piece, b.Piece))
	}
	slices.SortFunc(send, byAge)
	slices.SortFunc(busy, byAge)
	return send, busy
}

// TakebackAction is what OriginTakeback.Cancel decides.
type TakebackAction int

const (
	// CancelHeld: the request was still held back on the connection;
	// drop it, nothing reached the origin.
	CancelHeld TakebackAction = iota + 1
	// CancelFinish: the piece is at least half received; let it finish.
	// It reaches the scheduler as a duplicate, which it expects.
	CancelFinish
	// CancelCut: withdraw the request from the origin and discard what
	// arrived of it.
	CancelCut
)

// OriginTakeback is one origin connection's rule for requests the
// scheduler takes back. The scheduler takes an origin request back as
// soon as an agent announces the piece; cutting the transfer throws away
// what the origin already sent, while never cutting costs about as much in
// duplicates, since the freed slot starts another origin piece. Finishing
// the pieces past half way bounds the loss per take-back at half a piece.
// While such a piece is still arriving, new requests to the origin are
// held, so the origin sends one thing at a time as the scheduler intends.
//
// The zero value is ready; it is not safe for concurrent use (the
// connection calls it under its lock).
type OriginTakeback struct {
	continuing map[int]bool
	held       []int
}

// Request reports whether a request of piece i may go to the origin now;
// if not, it is held until the pieces let finish have ended (see Ended).
func (t *OriginTakeback) Request(i int) bool {
	if len(t.continuing) > 0 {
		t.held = append(t.held, i)
		return false
	}
	return true
}

// Cancel decides the scheduler's take-back of piece i, of which received
// of size bytes have arrived (started: any chunk at all).
func (t *OriginTakeback) Cancel(i int, started bool, received, size int64) TakebackAction {
	if k := slices.Index(t.held, i); k >= 0 {
		t.held = slices.Delete(t.held, k, k+1)
		return CancelHeld
	}
	if started && 2*received >= size {
		if t.continuing == nil {
			t.continuing = make(map[int]bool)
		}
		t.continuing[i] = true
		return CancelFinish
	}
	return CancelCut
}

// Continuing reports whether piece i was taken back and is let finish: an
// answer for it is not one the scheduler waits for.
func (t *OriginTakeback) Continuing(i int) bool { return t.continuing[i] }

// Ended: piece i is no longer on the wire (received, rejected or broken).
// It returns the held requests to send now, once no piece let finish is
// still arriving.
func (t *OriginTakeback) Ended(i int) (release []int) {
	if !t.continuing[i] {
		return nil
	}
	delete(t.continuing, i)
	if len(t.continuing) > 0 {
		return nil
	}
	release, t.held = t.held, nil
	return release
}

// Reset forgets every piece let finish and every held request (the
// connection stopped delivering to the download).
func (t *OriginTakeback) Reset() {
	clear(t.continuing)
	t.held = nil
}

// Dial backoff: a failed dial is retried after dialBackoffBase, doubling
// per failure up to dialBackoffMax; an agent that failed dialForgetAfter
// times is forgotten (the tracker names it again if it comes back), an
// origin never is (the source of last resort).
const (
	dialBackoffBase = time.Second
	dialBackoffMax  = 30 * time.Second
	dialForgetAfter = 3
)

// DialOrigins reports whether a download may dial its origins yet. With a
// tracker (tracker true) it waits for the tracker's first answer (or its
// failure: answered) and then, while no agent has joined, for the agents
// being dialed to join or fail, for at most dialTimeout from the
// download's start. Agents that start together then meet each other
// before asking the origin, instead of all pulling the same first pieces
// from it while alone; and an agent joining a swarm that holds the blob
// takes it from the swarm, not from an origin that answered first (on a
// loaded machine a whole layer came from the origin while the dial of the
// agent holding it was still on its way).
func DialOrigins(tracker bool, sinceStart, dialTimeout time.Duration, answered bool, agentsJoined, agentsDialing int) bool {
	if !tracker || sinceStart >= dialTimeout {
		return true
	}
	return answered && (agentsJoined > 0 || agentsDialing == 0)
}

// DialRetry says what follows the failures-th failure in a row to dial a
// peer, or a connection to it that ended: forget it, or dial again after
// wait.
func DialRetry(origin bool, failures int) (forget bool, wait time.Duration) {
	if !origin && failures >= dialForgetAfter {
		return true, 0
	}
	return false, min(dialBackoffBase<<min(max(failures, 1)-1, 5), dialBackoffMax)
}
