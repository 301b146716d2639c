package seeder

import (
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// ledger is the seeder's superseeding record: per blob being served, which
// agent each piece was last given to and when. A request for a piece that
// is being sent to another agent, or was given to one within the piece's
// window, is answered REASON_AT_PEERS with the time left: the agent fetches
// it from the swarm instead, which the recipient is about to serve. So a
// layer leaves an origin node about once even when every agent of a swarm
// asks for the same pieces at the same moment, whatever the agents'
// own deferral does.
//
// The window is the longer of twice the time the piece last took to send
// and blobSpread (3) times the time this node's link, at the rate it has
// been sending, takes to send the whole blob once, clamped to [minWindow,
// maxWindow]: a swarm of agents with links like the origin's spreads a
// piece over about that long, so the piece should not go out again
// before; and short enough that a recipient that left quietly is replaced
// by the next agent that asks.
// (The piece's send time alone is too short on slow links: the swarm has
// not spread the piece by then; docs/benchmarks.md, swarm.) A stream or
// piece connection that breaks (killed, network gone) frees the pieces
// given over it at once, and only those: an agent's stream and its piece
// connection are separate recipients of one agent. An agent asking again
// for a piece it was given (a retry after a cancel, on its other
// connection) is always served.
type ledger struct {
	minWindow, maxWindow time.Duration
	// rate returns the node's send rate in bytes per second (0: unknown).
	rate func() float64
	// freed is told of each grant freed for another agent, and why
	// (nil: nobody is).
	freed func(freedGrant)

	mu    sync.Mutex
	blobs map[digest.Digest]*blobLedger
}

// blobLedger is one blob's grants, kept while streams for it are open.
type blobLedger struct {
	digest digest.Digest
	refs   int
	size   int64 // the blob's size
	grants []grant
}

type grant struct {
	grantRecord
	// prev is the record before the last take, for undo.
	prev grantRecord
}

type grantRecord struct {
	given bool // sent (or being sent) at least once, to anyone
	recipient
	start time.Time
	end   time.Time     // zero while being sent
	took  time.Duration // how long the last completed send took
}

// recipient is what a piece was given to: the agent (peer), and the
// stream or piece connection that carried it (via, a number of the
// seeder's own), so that one that breaks frees its own grants only.
type recipient struct {
	peer string
	via  uint64
}

// Why a grant was freed, the reason label of
// shoal_origin_seeder_superseed_grants_freed_total.
const (
	// freedWindowOver: another agent asked once the piece's window had
	// run out since its send ended.
	freedWindowOver = "window_over"
	// freedSendIncomplete: the send was cancelled or failed.
	freedSendIncomplete = "send_incomplete"
	// freedConnBroken: the stream or piece connection the piece was
	// given over broke (the agent killed, its network gone).
	freedConnBroken = "connection_broken"
	// freedStreamsClosed: the blob's last stream or piece connection
	// closed while the piece was being sent or within its window: the
	// record is forgotten, and the next stream starts afresh.
	freedStreamsClosed = "streams_closed"
)

// freedGrant is a grant freed for the next agent asking, and why.
type freedGrant struct {
	digest digest.Digest
	piece  int
	recipient
	reason string
	// sending: the piece's send had not ended; else since is how long
	// ago it ended and window the piece's window then.
	sending       bool
	since, window time.Duration
}

// grantFreed logs a freed grant at debug level and counts it by reason.
func (s *Server) grantFreed(f freedGrant) {
	s.m.grantsFreed.WithLabelValues(f.reason).Inc()
	if f.sending {
		s.log.Debug("seeder: superseeding grant freed while its piece was being sent",
			"digest", f.digest, "piece", f.piece, "peer", f.peer, "reason", f.reason)
		return
	}
	s.log.Debug("seeder: superseeding grant freed", "digest", f.digest, "piece", f.piece, "peer", f.peer,
		"reason", f.reason, "sent_ago", f.since.Round(time.Millisecond), "window", f.window.Round(time.Millisecond))
}

// newLedger returns a ledger; minWindow 0 turns superseeding off (nil).
// rate reports the node's send rate (nil: the piece's send time alone);
// freed, if not nil, is told of every grant freed, under the ledger's
// lock.
func newLedger(minWindow, maxWindow time.Duration, rate func() float64, freed func(freedGrant)) *ledger {
	if minWindow <= 0 {
		return nil
	}
	return &ledger{minWindow: minWindow, maxWindow: max(minWindow, maxWindow), rate: rate, freed: freed, blobs: map[digest.Digest]*blobLedger{}}
}

// free forgets g's recipient (piece i of b) at now, and tells l.freed why.
func (l *ledger) free(b *blobLedger, i int, g *grant, reason string, now time.Time) {
	if l.freed != nil && g.peer != "" {
		f := freedGrant{digest: b.digest, piece: i, recipient: g.recipient, reason: reason, sending: g.end.IsZero()}
		if !f.sending {
			f.since, f.window = now.Sub(g.end), l.window(b, g.grantRecord)
		}
		l.freed(f)
	}
	g.recipient, g.start, g.end = recipient{}, time.Time{}, time.Time{}
}

// open returns the record of a blob of size bytes for a stream; release it
// with close.
func (l *ledger) open(d digest.Digest, pieces int, size int64) *blobLedger {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.blobs[d]
	if b == nil {
		b = &blobLedger{digest: d, size: size, grants: make([]grant, pieces)}
		l.blobs[d] = b
	}
	b.refs++
	return b
}

// close releases a record of open at now. The last one forgets the blob's
// grants.
func (l *ledger) close(d digest.Digest, b *blobLedger, now time.Time) {
	if l == nil || b == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b.refs--; b.refs > 0 {
		return
	}
	delete(l.blobs, d)
	for i := range b.grants {
		g := &b.grants[i]
		if g.peer != "" && (g.end.IsZero() || now.Sub(g.end) < l.window(b, g.grantRecord)) {
			l.free(b, i, g, freedStreamsClosed, now)
		}
	}
}

// blobSpread is how many times the time this node's link takes to send a
// blob once the superseeding window lasts at least: a swarm spreads a
// blob over longer than that (every agent needs it all, over links like
// the origin's; 3.3 to 4.8 times it at 10 Mbit/s with 50 agents), and a
// window of one blob's send time let most pieces go out again while the
// swarm was still passing them on (docs/benchmarks.md, swarm).
const blobSpread = 3

// window is how long after a completed send of g, a piece of b, the piece
// stays with the swarm.
func (l *ledger) window(b *blobLedger, g grantRecord) time.Duration {
	w := 2 * g.took
	if l.rate != nil {
		if r := l.rate(); r > 0 {
			w = max(w, time.Duration(blobSpread*float64(b.size)/r*float64(time.Second)))
		}
	}
	return min(max(w, l.minWindow), l.maxWindow)
}

// take asks to send piece i to r at now. It returns 0 and records the
// grant when the piece may be sent, or how long until it may. again
// reports a piece given before (to this or another agent), for the
// seeder's debug log and metrics.
func (l *ledger) take(b *blobLedger, i int, r recipient, now time.Time) (wait time.Duration, again bool) {
	if l == nil || b == nil || i < 0 || i >= len(b.grants) {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	g := &b.grants[i]
	if g.peer != "" && g.peer != r.peer {
		if g.end.IsZero() {
			// Being sent to another agent: that send plus the window.
			return l.window(b, g.grantRecord), false
		}
		if left := l.window(b, g.grantRecord) - now.Sub(g.end); left > 0 {
			return left, false
		}
		l.free(b, i, g, freedWindowOver, now)
	}
	again = g.given
	g.prev = g.grantRecord
	g.recipient, g.start, g.end, g.given = r, now, time.Time{}, true
	return 0, again
}

// release frees the pieces given to r, whose stream or piece connection
// broke at now: the next agent asking for one is served at once. What the
// agent got over its other connection keeps its window. A grant whose
// window is over already is left to the next agent asking (window_over):
// the break freed nothing there, and counting it as connection_broken
// would blame breaks for re-sends they did not cause.
func (l *ledger) release(b *blobLedger, r recipient, now time.Time) {
	if l == nil || b == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range b.grants {
		g := &b.grants[i]
		if g.recipient == r && (g.end.IsZero() || now.Sub(g.end) < l.window(b, g.grantRecord)) {
			l.free(b, i, g, freedConnBroken, now)
		}
		if g.prev.recipient == r {
			g.prev.recipient, g.prev.start, g.prev.end = recipient{}, time.Time{}, time.Time{}
		}
	}
}

// undo withdraws a grant of take that was not acted on (no upload slot):
// the piece's record is as before.
func (l *ledger) undo(b *blobLedger, i int, r recipient) {
	if l == nil || b == nil || i < 0 || i >= len(b.grants) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	g := &b.grants[i]
	if g.recipient == r && g.end.IsZero() {
		g.grantRecord = g.prev
	}
}

// done records the end of a send granted by take. An incomplete send
// (cancelled, failed) frees the piece for the next agent at once, unless
// its agent was given it over its other connection before (a retry there
// after a cancel): that earlier grant holds again.
func (l *ledger) done(b *blobLedger, i int, r recipient, now time.Time, complete bool) {
	if l == nil || b == nil || i < 0 || i >= len(b.grants) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	g := &b.grants[i]
	switch {
	case g.recipient == r && g.end.IsZero():
		if complete {
			g.end, g.took = now, now.Sub(g.start)
			return
		}
		if p := g.prev; p.peer == r.peer && p.via != r.via {
			// The agent asked again over its other connection for a
			// piece it was given there: that send holds the piece (it
			// is with the agent, or still on its way; the agent is
			// served again whenever it asks).
			g.grantRecord = p
			return
		}
		l.free(b, i, g, freedSendIncomplete, now)
	case g.prev.recipient == r && g.prev.end.IsZero():
		// The send of a grant its agent has since taken again over its
		// other connection: recorded for when that one gives it back.
		if complete {
			g.prev.end, g.prev.took = now, now.Sub(g.prev.start)
		} else {
			g.prev.recipient, g.prev.start = recipient{}, time.Time{}
		}
	}
}
