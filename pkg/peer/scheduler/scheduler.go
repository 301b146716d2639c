// Package scheduler decides which pieces of one blob an agent requests from
// which peers. It is a pure state machine in the manner of etcd's raft: the
// caller feeds it events (a peer joined, sent a Have, delivered or rejected
// a piece, time passed, a client's reader moved) and asks it what to do next
// (requests to send, requests to cancel, peers to drop, whether the blob is
// done). It starts no goroutines, reads no clock and does no I/O, so every
// rule is checked by table tests and a seeded simulation, and the agent's
// event loop that owns a Scheduler is its only accessor (no locks).
//
// The rules, in the order Next applies them:
//
//   - timeouts: a request that has seen no progress from its peer (a
//     piece delivered, or bytes of one: PeerProgress) for
//     Config.PieceTimeout is cancelled and counts against the peer; after
//     Config.MaxTimeouts in a row an agent (never an origin, the source of
//     last resort) is blacklisted as unresponsive;
//   - pieces within Config.ReaderWindow pieces at or after a streaming
//     reader's position come first, nearest first, so a client is served
//     while the rest of the blob downloads;
//   - every other piece is taken rarest first (fewest non-origin holders),
//     ties broken by a per-scheduler random order so that agents starting
//     together fetch different pieces and can trade them;
//   - requests are pipelined up to Config.MaxInFlightPerPeer per peer;
//   - origins are the fallback: a piece goes to an origin only when no
//     connected agent holds it, every agent holding it has timed out
//     lately, or it failed Config.OriginAfterFailures times. While agents
//     are connected the origins get at most Config.MaxOriginInFlight
//     requests in all, and a request waiting at an origin is cancelled as
//     soon as a healthy agent announces the piece (it then goes to that
//     agent), so a swarm leaves most uploads to its members;
//   - endgame: once at most Config.EndgameThreshold pieces are missing and
//     every one of them is in flight, each is also requested from other
//     agents (up to Config.EndgameMaxRequests in all); when one copy
//     arrives the others are cancelled. Endgame never duplicates onto an
//     origin, whose egress is the thing being saved;
//   - a peer whose piece fails verification is blacklisted at once and never
//     asked again. One blacklisted as unresponsive is refused too, unless it
//     joins again as another process (a different PeerJoined.Incarnation):
//     an agent restarted under the same peer id (a DaemonSet's stable id) is
//     not the process that hung;
//   - a Reject frees the request. NOT_HELD also forgets that the peer has
//     the piece. BUSY lowers the peer's pipeline to the requests it still
//     has (one more is allowed per piece it delivers, up to
//     Config.MaxInFlightPerPeer); a peer that refuses while holding none
//     of this agent's requests rests for half to all of
//     Config.BusyBackoff. Resting a peer that is sending to this agent
//     would leave its uplink idle once that piece is done: every
//     requester it refused would be resting too.
//
// Beside it, origin.go holds the agent's origin-egress rules, as pure: which
// agents ask the origin at once (Fetcher), how the others hold their origin
// requests back (OriginDeferral), letting an origin piece half received
// finish (OriginTakeback) and dial backoff (DialRetry).
package scheduler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// PeerID identifies a peer: the peer_id of its handshake.
type PeerID string

// Config bounds the scheduler. DefaultConfig returns working values.
type Config struct {
	// MaxInFlightPerPeer is how many requests may be outstanding to one
	// peer. Pipelining hides the round trip between pieces; with 4 MiB
	// pieces, 4 keeps 16 MiB queued at a peer, enough to fill a 10 Gbit/s
	// link at 10 ms RTT, without piling work on one slow peer.
	MaxInFlightPerPeer int
	// MaxOriginInFlight caps the requests outstanding to all origins
	// together while at least one non-origin peer is connected. Alone, an
	// agent pipelines to origins like to any peer (MaxInFlightPerPeer each).
	// In a swarm the origin's link is the bottleneck and every request
	// queued there is a piece it may send twice: in the swarm simulation
	// (swarm_test.go) the origin sends less with 1 than with 2, for 20
	// agents and for 50.
	MaxOriginInFlight int
	// MaxPeers is the number of non-origin peers one blob's download uses;
	// more are refused with ErrTooManyPeers (the caller answers
	// RESOURCE_EXHAUSTED or closes the connection). Origins do not count:
	// the fallback must always be reachable.
	MaxPeers int
	// PieceTimeout is how long a request may go without its peer delivering
	// anything (this piece or any other, whole or a part reported with
	// PeerProgress) before it is cancelled. It is measured from the later
	// of the request and the peer's last progress, so a deep pipeline at a
	// steady peer, or a piece that takes longer than this on a slow link
	// while its bytes keep coming, does not time out.
	PieceTimeout time.Duration
	// MaxTimeouts is the number of timeouts in a row (no delivery in
	// between) after which a peer is blacklisted as unresponsive.
	MaxTimeouts int
	// BusyBackoff is how long a peer that answered REASON_BUSY gets no
	// requests.
	BusyBackoff time.Duration
	// OriginAfterFailures lets a piece go to an origin after that many
	// timeouts or rejects from peers, even though agents hold it.
	OriginAfterFailures int
	// EndgameThreshold is the number of missing pieces at or below which
	// endgame may start (when every one of them is in flight). It bounds the
	// bytes duplicate requests can waste.
	EndgameThreshold int
	// EndgameMaxRequests is how many peers one piece may be requested from
	// at once in endgame, the first request included.
	EndgameMaxRequests int
	// ReaderWindow is how many pieces at and after a streaming reader's
	// position are fetched before any other.
	ReaderWindow int
	// Seed seeds the order that breaks ties between equally rare pieces.
	// Agents must use different seeds (e.g. a hash of their peer id):
	// agents that start together then ask the origin for different pieces
	// and trade them, instead of all fetching the same ones.
	Seed uint64
}

// DefaultConfig returns the defaults, with Seed 0: set it per agent.
func DefaultConfig() Config {
	return Config{
		MaxInFlightPerPeer:  4,
		MaxOriginInFlight:   1,
		MaxPeers:            16,
		PieceTimeout:        20 * time.Second, // a 4 MiB piece at 1.6 Mbit/s
		MaxTimeouts:         3,
		BusyBackoff:         2 * time.Second,
		OriginAfterFailures: 3,
		EndgameThreshold:    8,
		EndgameMaxRequests:  3,
		ReaderWindow:        4,
	}
}

// Errors returned by Handle. The caller should close the connection to the
// peer the event came from.
var (
	// ErrTooManyPeers: PeerJoined beyond Config.MaxPeers.
	ErrTooManyPeers = errors.New("too many peers for this blob")
	// ErrBlacklisted: PeerJoined for a blacklisted peer (and, for one
	// blacklisted as Unresponsive, the same incarnation or an unknown one).
	ErrBlacklisted = errors.New("peer is blacklisted")
	// ErrDuplicatePeer: PeerJoined for a peer already joined.
	ErrDuplicatePeer = errors.New("peer already joined")
	// ErrUnknownPeer: an event about a peer that has not joined (or left).
	ErrUnknownPeer = errors.New("unknown peer")
	// ErrBadPiece: a piece index out of range or a bitfield of the wrong
	// length: a protocol violation.
	ErrBadPiece = errors.New("piece index or bitfield out of range")
)

// Reason says why a peer was blacklisted.
type Reason int

const (
	// Corrupt: the peer sent a piece that failed verification.
	Corrupt Reason = iota + 1
	// Unresponsive: the peer let Config.MaxTimeouts requests in a row time
	// out. Forgiven when the peer joins as a new incarnation (a restart).
	Unresponsive
)

func (r Reason) String() string {
	switch r {
	case Corrupt:
		return "corrupt"
	case Unresponsive:
		return "unresponsive"
	}
	return "unknown"
}

// ban is a blacklist entry: why, and the incarnation of the peer's process
// then (empty if unknown).
type ban struct {
	reason      Reason
	incarnation string
}

// forgives reports whether a peer joining as incarnation inc is no longer
// the one banned: only an unresponsive peer, and only when it is known to
// be another process. A ban of an unknown incarnation (a peer that sends
// none) is lifted by any known one: such a peer never sends one, so the
// process sending one is new.
func (b ban) forgives(inc string) bool {
	return b.reason == Unresponsive && inc != "" && inc != b.incarnation
}

// Request asks Peer for Piece.
type Request struct {
	Peer  PeerID
	Piece int
}

// Cancel withdraws an earlier request of Piece from Peer.
type Cancel struct {
	Peer  PeerID
	Piece int
}

// Blacklisting says Peer is dropped for good, and why. Its requests are
// already forgotten; the caller closes its connection for this blob.
type Blacklisting struct {
	Peer   PeerID
	Reason Reason
}

// Actions is what the caller must do after Next.
type Actions struct {
	// Requests to send, in priority order.
	Requests []Request
	// Cancels to send: timed out requests and endgame duplicates whose piece
	// arrived from someone else.
	Cancels []Cancel
	// Blacklisted peers since the last Next.
	Blacklisted []Blacklisting
	// Done reports that every piece is held.
	Done bool
}

// Stats is one peer's record, for metrics and tests.
type Stats struct {
	Origin    bool
	InFlight  int
	Delivered int
	// Timeouts counts every timed out request; ConsecutiveTimeouts those
	// since the last delivery.
	Timeouts            int
	ConsecutiveTimeouts int
	Rejects             int
}

type peer struct {
	id          PeerID
	origin      bool
	incarnation string
	has         *metainfo.Bitfield
	inFlight    int
	// limit is how many requests the peer may have in flight: from
	// Config.MaxInFlightPerPeer, down to what it had in flight when it
	// answered BUSY, and up by one per piece it delivers.
	limit     int
	busyUntil time.Time
	// lastProgress is when the peer last delivered a piece, joined, or had a
	// request cancelled because another copy arrived (it may have been busy
	// sending that one): the piece timeout runs from here or from the
	// request, whichever is later.
	lastProgress time.Time
	stats        Stats
}

// full reports whether the peer may take no more requests.
func (p *peer) full() bool { return p.inFlight >= p.limit }

// healthy reports whether the peer has not timed out since it last delivered.
func (p *peer) healthy() bool { return p.stats.ConsecutiveTimeouts == 0 }

type request struct {
	peer   *peer
	sentAt time.Time
}

type piece struct {
	requests []request
	// avail is the number of joined non-origin peers holding the piece.
	avail int
	// failures counts timeouts and rejects of this piece by peers.
	failures int
	// prio breaks ties between equally rare pieces.
	prio uint32
	// originAfter: no origin is asked for the piece before this time (an
	// origin answered REASON_AT_PEERS: it just gave it to another agent).
	originAfter time.Time
}

type reader struct {
	id    int
	piece int
}

// Scheduler is the download state of one blob. It is not safe for
// concurrent use: one event loop owns it.
type Scheduler struct {
	cfg         Config
	pieceLength int64
	size        int64
	have        *metainfo.Bitfield
	missing     int
	pieces      []piece
	// peers in join order: iteration order decides ties, and a map's would
	// make runs irreproducible.
	peers     []*peer
	byID      map[PeerID]*peer
	nonOrigin int
	blacklist map[PeerID]ban
	readers   []reader

	originInFlight int
	// Outputs of events, handed out by the next Next.
	cancels     []Cancel
	blacklisted []Blacklisting
	// rng jitters busy backoffs: peers refused together come back apart.
	rng *rand.Rand
	// Scratch space reused by Next.
	candidates []candidate
	free       []*peer
}

// New returns a scheduler for the blob m describes, holding the pieces set
// in have (nil: none, e.g. a fresh download; else what the piece store
// reloaded). have is copied.
func New(m *metainfo.Metainfo, have *metainfo.Bitfield, cfg Config) (*Scheduler, error) {
	if cfg.MaxInFlightPerPeer < 1 || cfg.MaxOriginInFlight < 1 {
		// A zero Config would never request anything: a caller bug.
		return nil, fmt.Errorf("scheduler config: MaxInFlightPerPeer and MaxOriginInFlight must be at least 1 (got %d, %d); start from DefaultConfig",
			cfg.MaxInFlightPerPeer, cfg.MaxOriginInFlight)
	}
	n := m.NumPieces()
	own := metainfo.NewBitfield(n)
	if have != nil {
		if have.Len() != n {
			return nil, ErrBadPiece
		}
		own, _ = metainfo.ParseBitfield(have.Bytes(), n)
	}
	s := &Scheduler{
		cfg:         cfg,
		pieceLength: m.PieceLength,
		size:        m.Size,
		have:        own,
		missing:     n - own.Count(),
		pieces:      make([]piece, n),
		byID:        make(map[PeerID]*peer),
		blacklist:   make(map[PeerID]ban),
		candidates:  make([]candidate, 0, n),
	}
	s.rng = rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	for i := range s.pieces {
		s.pieces[i].prio = s.rng.Uint32()
	}
	return s, nil
}

// Have returns a copy of the pieces held.
func (s *Scheduler) Have() *metainfo.Bitfield {
	b, _ := metainfo.ParseBitfield(s.have.Bytes(), s.have.Len())
	return b
}

// Done reports whether every piece is held.
func (s *Scheduler) Done() bool { return s.missing == 0 }

// PeerStats returns a joined peer's record.
func (s *Scheduler) PeerStats(id PeerID) (Stats, bool) {
	p, ok := s.byID[id]
	if !ok {
		return Stats{}, false
	}
	st := p.stats
	st.InFlight = p.inFlight
	st.Origin = p.origin
	return st, true
}

// Blacklisted reports whether id is blacklisted, and why. A peer
// blacklisted as Unresponsive may still join as a new incarnation.
func (s *Scheduler) Blacklisted(id PeerID) (Reason, bool) {
	b, ok := s.blacklist[id]
	return b.reason, ok
}

// NumPeers returns the number of joined peers, origins included.
func (s *Scheduler) NumPeers() int { return len(s.peers) }

// InFlight returns every outstanding request, in piece order.
func (s *Scheduler) InFlight() []Request {
	var out []Request
	for i := range s.pieces {
		for _, r := range s.pieces[i].requests {
			out = append(out, Request{Peer: r.peer.id, Piece: i})
		}
	}
	return out
}
