package scheduler

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

const testPieceLength = 16

// layout returns the metainfo of a blob of n pieces, the last one short.
// The scheduler only looks at the layout, never at hashes.
func layout(n int) *metainfo.Metainfo {
	size := int64(n) * testPieceLength
	if n > 0 {
		size -= testPieceLength / 2
	}
	return &metainfo.Metainfo{Digest: digest.Digest(fmt.Sprintf("sha256:%064x", n)), Size: size,
		PieceLength: testPieceLength, PieceHashes: make([][metainfo.HashSize]byte, n)}
}

func bits(n int, pieces ...int) *metainfo.Bitfield {
	b := metainfo.NewBitfield(n)
	for _, i := range pieces {
		b.Set(i)
	}
	return b
}

// testConfig is small enough that every rule shows in a few pieces.
func testConfig() Config {
	return Config{
		MaxInFlightPerPeer:  2,
		MaxOriginInFlight:   2,
		MaxPeers:            4,
		PieceTimeout:        10 * time.Second,
		MaxTimeouts:         2,
		BusyBackoff:         5 * time.Second,
		OriginAfterFailures: 2,
		EndgameThreshold:    0, // off unless a case turns it on
		EndgameMaxRequests:  2,
		ReaderWindow:        2,
		Seed:                1,
	}
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// step is one event (ev != nil) or one call of Next (want != nil), at t0+at.
type step struct {
	at   time.Duration
	ev   Event
	err  error
	want *Actions
}

func ev(at time.Duration, e Event) step { return step{at: at, ev: e} }
func fails(e Event, err error) step     { return step{ev: e, err: err} }
func next(at time.Duration, reqs ...Request) step {
	return step{at: at, want: &Actions{Requests: reqs}}
}
func nextDo(at time.Duration, a Actions) step { return step{at: at, want: &a} }
func r(p PeerID, i int) Request               { return Request{Peer: p, Piece: i} }
func join(p PeerID, n int, pieces ...int) Event {
	return PeerJoined{Peer: p, Bitfield: bits(n, pieces...)}
}
func joinAs(p PeerID, inc string, n int, pieces ...int) Event {
	return PeerJoined{Peer: p, Incarnation: inc, Bitfield: bits(n, pieces...)}
}
func origin(p PeerID) Event { return PeerJoined{Peer: p, Origin: true} }
func got(p PeerID, i int) Event {
	return PieceReceived{Peer: p, Piece: i, OK: true}
}

func sortActions(a *Actions) {
	slices.SortFunc(a.Requests, func(x, y Request) int {
		return cmp.Or(cmp.Compare(x.Peer, y.Peer), cmp.Compare(x.Piece, y.Piece))
	})
	slices.SortFunc(a.Cancels, func(x, y Cancel) int {
		return cmp.Or(cmp.Compare(x.Peer, y.Peer), cmp.Compare(x.Piece, y.Piece))
	})
}

func run(t *testing.T, s *Scheduler, steps []step) {
	t.Helper()
	for k, st := range steps {
		now := t0.Add(st.at)
		if st.ev != nil {
			err := s.Handle(now, st.ev)
			if !errors.Is(err, st.err) || (err == nil) != (st.err == nil) {
				t.Fatalf("step %d: Handle(%#v) = %v, want %v", k, st.ev, err, st.err)
			}
			continue
		}
		got := s.Next(now)
		want := *st.want
		sortActions(&got)
		sortActions(&want)
		if !slices.Equal(got.Requests, want.Requests) || !slices.Equal(got.Cancels, want.Cancels) ||
			!slices.Equal(got.Blacklisted, want.Blacklisted) || got.Done != want.Done {
			t.Fatalf("step %d: Next(t0+%v) =\n  %+v\nwant\n  %+v", k, st.at, got, want)
		}
	}
}

func TestRules(t *testing.T) {
	s := time.Second
	cases := []struct {
		name   string
		pieces int
		have   []int
		config func(*Config)
		steps  []step
	}{
		{
			name: "rarest first: the piece one peer has goes to it, common pieces to the others", pieces: 4,
			config: func(c *Config) { c.MaxInFlightPerPeer = 1 },
			steps: []step{
				ev(0, join("a", 4, 0, 1, 2, 3)), ev(0, join("b", 4, 0, 1, 2)), ev(0, join("c", 4, 0, 1)),
				next(0, r("a", 3), r("b", 2), r("c", 1)), // 0 and 1 tie (3 holders); the seed picks 1
			},
		},
		{
			name: "no peer holds a missing piece: nothing to request", pieces: 3,
			steps: []step{ev(0, join("a", 3)), next(0)},
		},
		{
			name: "Have makes a peer a holder", pieces: 3,
			steps: []step{
				ev(0, join("a", 3)), next(0),
				ev(s, PeerHave{Peer: "a", Piece: 1}), next(s, r("a", 1)),
			},
		},
		{
			name: "pipelining: up to MaxInFlightPerPeer requests per peer, one more per delivery", pieces: 5,
			config: func(c *Config) { c.MaxInFlightPerPeer = 3 },
			steps: []step{
				ev(0, join("a", 5, 0, 1, 2, 3, 4)),
				next(0, r("a", 0), r("a", 1), r("a", 3)),
				next(0),
				ev(s, got("a", 3)),
				next(s, r("a", 2)),
			},
		},
		{
			name: "a streaming reader's window comes before rarer pieces", pieces: 6,
			config: func(c *Config) { c.MaxInFlightPerPeer = 2 },
			steps: []step{
				ev(0, join("a", 6, 0, 1, 2, 3, 4, 5)), ev(0, join("b", 6, 5)),
				ev(0, ReaderAt{Reader: 1, Offset: 2*testPieceLength + 3}),
				// b's piece 5 is rarest but outside the window [2,4); a takes 2 and 3.
				next(0, r("a", 2), r("a", 3), r("b", 5)),
			},
		},
		{
			name: "a reader at the end of the blob is removed", pieces: 3,
			config: func(c *Config) { c.MaxInFlightPerPeer = 1 },
			steps: []step{
				ev(0, ReaderAt{Reader: 1, Offset: 0}),
				ev(0, ReaderAt{Reader: 1, Offset: 3*testPieceLength - testPieceLength/2}),
				ev(0, join("a", 3, 0, 1, 2)),
				next(0, r("a", 1)), // the random tie order: with the reader, 0 would be first
			},
		},
		{
			name: "origins only for pieces no agent holds, at most MaxOriginInFlight while agents are connected", pieces: 6,
			config: func(c *Config) { c.MaxInFlightPerPeer = 4; c.MaxOriginInFlight = 1 },
			steps: []step{
				ev(0, origin("o")), ev(0, join("a", 6, 0, 1)),
				next(0, r("a", 0), r("a", 1), r("o", 3)),
				ev(s, got("o", 3)),
				next(s, r("o", 5)),
			},
		},
		{
			name: "origins are not used while the holders are only busy with other pieces", pieces: 4,
			config: func(c *Config) { c.MaxInFlightPerPeer = 1 },
			steps: []step{
				ev(0, origin("o")), ev(0, join("a", 4, 0, 1, 2, 3)),
				next(0, r("a", 1)),
				next(s),
			},
		},
		{
			name: "an agent alone with origins pipelines to each of them", pieces: 8,
			config: func(c *Config) { c.MaxInFlightPerPeer = 2; c.MaxOriginInFlight = 1 },
			steps: []step{
				ev(0, origin("o1")), ev(0, origin("o2")),
				next(0, r("o1", 1), r("o1", 5), r("o2", 0), r("o2", 3)),
			},
		},
		{
			name: "an origin request is taken back when an agent gets the piece", pieces: 2,
			steps: []step{
				ev(0, origin("o")), ev(0, join("a", 2)),
				next(0, r("o", 0), r("o", 1)),
				ev(s, PeerHave{Peer: "a", Piece: 1}),
				nextDo(s, Actions{Cancels: []Cancel{{Peer: "o", Piece: 1}}, Requests: []Request{r("a", 1)}}),
			},
		},
		{
			name: "an origin request is taken back even while the agent holding the piece is busy", pieces: 3,
			config: func(c *Config) { c.MaxInFlightPerPeer = 1; c.MaxOriginInFlight = 1 },
			steps: []step{
				ev(0, origin("o")), ev(0, join("a", 3, 0)),
				next(0, r("a", 0), r("o", 1)),
				ev(s, PeerHave{Peer: "a", Piece: 1}),
				// Piece 1 leaves the origin and waits for a; the origin's slot
				// goes to piece 2, which no agent has.
				nextDo(s, Actions{Cancels: []Cancel{{Peer: "o", Piece: 1}}, Requests: []Request{r("o", 2)}}),
				ev(2*s, got("a", 0)),
				next(2*s, r("a", 1)),
			},
		},
		{
			name: "an origin request stays when the agent that got the piece timed out lately", pieces: 2,
			config: func(c *Config) { c.MaxTimeouts = 5 },
			steps: []step{
				ev(0, join("a", 2, 0)),
				next(0, r("a", 0)),
				ev(5*s, origin("o")),
				next(5*s, r("o", 1)),
				// a times out on 0, which goes to the origin too.
				nextDo(10*s, Actions{Cancels: []Cancel{{Peer: "a", Piece: 0}}, Requests: []Request{r("o", 0)}}),
				ev(11*s, PeerHave{Peer: "a", Piece: 1}),
				next(11 * s),
			},
		},
		{
			name: "a Reject frees the request; NOT_HELD forgets the piece, so the origin gets it", pieces: 2,
			config: func(c *Config) { c.MaxInFlightPerPeer = 1 },
			steps: []step{
				ev(0, join("a", 2, 0)), ev(0, origin("o")),
				next(0, r("a", 0), r("o", 1)),
				ev(s, RequestRejected{Peer: "a", Piece: 0, NotHeld: true}),
				next(s), // the origin's only slot is taken
				ev(s, got("o", 1)),
				next(s, r("o", 0)),
			},
		},
		{
			name: "a busy Reject from a peer with none of our requests left rests it for half to all of BusyBackoff", pieces: 1,
			steps: []step{
				ev(0, join("a", 1, 0)),
				next(0, r("a", 0)),
				ev(s, RequestRejected{Peer: "a", Piece: 0}),
				next(3400 * time.Millisecond),
				next(6*s, r("a", 0)),
			},
		},
		{
			name: "a busy Reject from a peer still holding our requests lowers its pipeline to them; each delivery raises it by one", pieces: 4,
			steps: []step{
				ev(0, join("a", 4, 0, 1, 2, 3)), ev(0, ReaderAt{Reader: 1, Offset: 0}),
				next(0, r("a", 0), r("a", 1)),
				ev(s, RequestRejected{Peer: "a", Piece: 1}),
				next(s), // a is sending piece 0: not rested, but no second request
				ev(2*s, got("a", 0)),
				// a delivered: its pipeline is 2 again.
				next(2*s, r("a", 1), r("a", 3)),
			},
		},
		{
			name: "an origin's AT_PEERS Reject holds back that piece from origins until its retry time, not the origin", pieces: 2,
			config: func(c *Config) { c.MaxInFlightPerPeer = 1 },
			steps: []step{
				ev(0, origin("o")), ev(0, ReaderAt{Reader: 1, Offset: 0}),
				next(0, r("o", 0)),
				ev(s, RequestRejected{Peer: "o", Piece: 0, AtPeers: true, RetryAfter: 3 * s}),
				// The origin is not rested: piece 1 goes to it at once.
				next(s, r("o", 1)),
				ev(2*s, got("o", 1)),
				next(2 * s),
				next(4*s, r("o", 0)),
			},
		},
		{
			name: "after an origin's AT_PEERS Reject the piece comes from the agent that has it", pieces: 1,
			steps: []step{
				ev(0, origin("o")),
				next(0, r("o", 0)),
				ev(s, RequestRejected{Peer: "o", Piece: 0, AtPeers: true, RetryAfter: 30 * s}),
				next(s),
				ev(2*s, join("a", 1, 0)),
				next(2*s, r("a", 0)),
			},
		},
		{
			name: "timeout: cancelled, penalized, re-requested from another holder", pieces: 1,
			config: func(c *Config) { c.MaxTimeouts = 5 },
			steps: []step{
				ev(0, join("a", 1, 0)),
				next(0, r("a", 0)),
				next(9 * s),
				ev(9*s, join("b", 1, 0)),
				nextDo(10*s, Actions{Cancels: []Cancel{{Peer: "a", Piece: 0}}, Requests: []Request{r("b", 0)}}),
			},
		},
		{
			name: "timeout: an agent that timed out lately loses to the origin", pieces: 2,
			config: func(c *Config) { c.MaxTimeouts = 5; c.MaxInFlightPerPeer = 1 },
			steps: []step{
				ev(0, join("a", 2, 0, 1)), ev(0, origin("o")),
				next(0, r("a", 1)),
				// a timed out, so piece 1 goes to the origin; piece 0 goes to a
				// all the same, since the origin's one slot is taken.
				nextDo(10*s, Actions{Cancels: []Cancel{{Peer: "a", Piece: 1}}, Requests: []Request{r("o", 1), r("a", 0)}}),
			},
		},
		{
			name: "timeout runs from the peer's last delivery, so a deep pipeline survives", pieces: 3,
			config: func(c *Config) { c.MaxInFlightPerPeer = 3 },
			steps: []step{
				ev(0, join("a", 3, 0, 1, 2)),
				next(0, r("a", 0), r("a", 1), r("a", 2)),
				ev(8*s, got("a", 0)),
				ev(16*s, got("a", 2)),
				next(25 * s), // piece 1 sent at 0, but a delivered at 16s
				nextDo(26*s, Actions{Cancels: []Cancel{{Peer: "a", Piece: 1}}, Requests: []Request{r("a", 1)}}),
			},
		},
		{
			name: "a peer still sending bytes of a slow piece does not time out", pieces: 1,
			config: func(c *Config) { c.MaxTimeouts = 5 },
			steps: []step{
				ev(0, join("a", 1, 0)), ev(0, join("b", 1, 0)),
				next(0, r("a", 0)),
				ev(8*s, PeerProgress{Peer: "a"}),
				ev(16*s, PeerProgress{Peer: "a"}),
				next(25 * s), // sent at 0, but bytes came at 16s: no cancel yet
				// Then nothing for PieceTimeout: cancelled, asked of b.
				nextDo(26*s, Actions{Cancels: []Cancel{{Peer: "a", Piece: 0}}, Requests: []Request{r("b", 0)}}),
				fails(PeerProgress{Peer: "z"}, ErrUnknownPeer),
			},
		},
		{
			name: "MaxTimeouts in a row blacklist the peer as unresponsive", pieces: 2,
			steps: []step{
				ev(0, join("a", 2, 0, 1)),
				next(0, r("a", 0), r("a", 1)),
				ev(10*s, Tick{}),
				nextDo(10*s, Actions{Blacklisted: []Blacklisting{{Peer: "a", Reason: Unresponsive}}}),
				fails(join("a", 2, 0, 1), ErrBlacklisted),
				fails(PeerHave{Peer: "a", Piece: 0}, ErrUnknownPeer),
			},
		},
		{
			name: "an unresponsive peer is taken back as a new incarnation, never as the same", pieces: 2,
			steps: []step{
				ev(0, joinAs("a", "boot-1", 2, 0, 1)),
				next(0, r("a", 0), r("a", 1)),
				ev(10*s, Tick{}),
				nextDo(10*s, Actions{Blacklisted: []Blacklisting{{Peer: "a", Reason: Unresponsive}}}),
				fails(joinAs("a", "boot-1", 2, 0, 1), ErrBlacklisted),
				fails(join("a", 2, 0, 1), ErrBlacklisted),
				// Restarted, with only piece 1 left in its cache: its new
				// handshake is what it holds.
				ev(11*s, joinAs("a", "boot-2", 2, 1)),
				next(11*s, r("a", 1)),
				ev(12*s, got("a", 1)),
				next(12 * s),
			},
		},
		{
			name: "a peer that sent no incarnation is taken back by a known one", pieces: 2,
			steps: []step{
				ev(0, join("a", 2, 0, 1)),
				next(0, r("a", 0), r("a", 1)),
				ev(10*s, Tick{}),
				nextDo(10*s, Actions{Blacklisted: []Blacklisting{{Peer: "a", Reason: Unresponsive}}}),
				fails(join("a", 2, 0, 1), ErrBlacklisted),
				ev(11*s, joinAs("a", "boot-2", 2, 0, 1)),
				next(11*s, r("a", 0), r("a", 1)),
			},
		},
		{
			name: "a delivery resets the run of timeouts", pieces: 3,
			config: func(c *Config) { c.MaxInFlightPerPeer = 1 },
			steps: []step{
				ev(0, join("a", 3, 0, 1, 2)), ev(0, ReaderAt{Reader: 1, Offset: 0}),
				next(0, r("a", 0)),
				nextDo(10*s, Actions{Cancels: []Cancel{{Peer: "a", Piece: 0}}, Requests: []Request{r("a", 0)}}),
				ev(11*s, got("a", 0)),
				next(11*s, r("a", 1)),
				// A second timeout, but not in a row: no blacklisting.
				nextDo(21*s, Actions{Cancels: []Cancel{{Peer: "a", Piece: 1}}, Requests: []Request{r("a", 1)}}),
			},
		},
		{
			name: "a corrupt piece blacklists the peer at once; it is never asked again", pieces: 2,
			config: func(c *Config) { c.MaxInFlightPerPeer = 1 },
			steps: []step{
				ev(0, join("a", 2, 0, 1)), ev(0, join("b", 2, 0, 1)),
				next(0, r("a", 1), r("b", 0)),
				ev(s, PieceReceived{Peer: "a", Piece: 1, OK: false}),
				nextDo(s, Actions{Blacklisted: []Blacklisting{{Peer: "a", Reason: Corrupt}}}),
				ev(2*s, got("b", 0)),
				next(2*s, r("b", 1)),
				fails(join("a", 2, 0, 1), ErrBlacklisted),
				// Restarting does not clear a corrupt peer.
				fails(joinAs("a", "boot-2", 2, 0, 1), ErrBlacklisted),
			},
		},
		{
			name: "a peer leaving frees its requests for others", pieces: 1,
			steps: []step{
				ev(0, join("a", 1, 0)), ev(0, join("b", 1, 0)),
				next(0, r("a", 0)),
				ev(s, PeerLeft{Peer: "a"}),
				next(s, r("b", 0)),
			},
		},
		{
			name: "endgame: the last pieces are requested from a second holder, the loser cancelled", pieces: 4,
			have:   []int{0, 1},
			config: func(c *Config) { c.EndgameThreshold = 2 },
			steps: []step{
				ev(0, join("a", 4, 0, 1, 2, 3)), ev(0, join("b", 4, 2, 3)),
				next(0, r("a", 2), r("a", 3), r("b", 2), r("b", 3)),
				ev(s, got("b", 3)),
				nextDo(s, Actions{Cancels: []Cancel{{Peer: "a", Piece: 3}}}),
				ev(s, got("b", 2)),
				nextDo(s, Actions{Cancels: []Cancel{{Peer: "a", Piece: 2}}, Done: true}),
			},
		},
		{
			name: "endgame waits until every missing piece is in flight", pieces: 3,
			config: func(c *Config) { c.EndgameThreshold = 3; c.MaxInFlightPerPeer = 1 },
			steps: []step{
				ev(0, join("a", 3, 0, 1, 2)), ev(0, join("b", 3, 0, 1)),
				next(0, r("a", 2), r("b", 1)), // piece 0 still waits: no endgame duplicates
			},
		},
		{
			name: "endgame does not start above the threshold", pieces: 2,
			config: func(c *Config) { c.EndgameThreshold = 1 },
			steps: []step{
				ev(0, join("a", 2, 0, 1)), ev(0, join("b", 2, 0, 1)),
				next(0, r("a", 1), r("b", 0)),
			},
		},
		{
			name: "endgame never duplicates onto an origin", pieces: 1,
			config: func(c *Config) { c.EndgameThreshold = 1 },
			steps: []step{
				ev(0, origin("o1")), ev(0, origin("o2")),
				next(0, r("o1", 0)),
			},
		},
		{
			name: "a late copy after a cancel is accepted and changes nothing", pieces: 2,
			have:   []int{0},
			config: func(c *Config) { c.EndgameThreshold = 1 },
			steps: []step{
				ev(0, join("a", 2, 1)), ev(0, join("b", 2, 1)),
				next(0, r("a", 1), r("b", 1)),
				ev(s, got("a", 1)),
				nextDo(s, Actions{Cancels: []Cancel{{Peer: "b", Piece: 1}}, Done: true}),
				ev(2*s, got("b", 1)),
				nextDo(2*s, Actions{Done: true}),
			},
		},
		{
			name: "done from the start when every piece is held", pieces: 2, have: []int{0, 1},
			steps: []step{nextDo(0, Actions{Done: true})},
		},
		{
			name: "an empty blob is done", pieces: 0,
			steps: []step{nextDo(0, Actions{Done: true})},
		},
		{
			name: "MaxPeers limits agents, not origins", pieces: 1,
			config: func(c *Config) { c.MaxPeers = 1 },
			steps: []step{
				ev(0, join("a", 1)),
				fails(join("b", 1), ErrTooManyPeers),
				ev(0, origin("o")),
				ev(0, PeerLeft{Peer: "a"}),
				ev(0, join("b", 1)),
			},
		},
		{
			name: "protocol violations are refused", pieces: 3,
			steps: []step{
				ev(0, join("a", 3)),
				fails(join("a", 3), ErrDuplicatePeer),
				fails(join("b", 9), ErrBadPiece),
				fails(PeerHave{Peer: "a", Piece: 3}, ErrBadPiece),
				fails(PeerHave{Peer: "a", Piece: -1}, ErrBadPiece),
				fails(PeerHave{Peer: "x", Piece: 0}, ErrUnknownPeer),
				fails(PieceReceived{Peer: "x", Piece: 0, OK: true}, ErrUnknownPeer),
				fails(RequestRejected{Peer: "a", Piece: 7}, ErrBadPiece),
				fails(PeerLeft{Peer: "x"}, ErrUnknownPeer),
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.config != nil {
				tc.config(&cfg)
			}
			s, err := New(layout(tc.pieces), bits(tc.pieces, tc.have...), cfg)
			if err != nil {
				t.Fatal(err)
			}
			run(t, s, tc.steps)
		})
	}
}

func TestOriginAfterFailuresWhenHoldersSaturated(t *testing.T) {
	// Piece 1 is held by a only; a is busy with piece 0 and piece 1 failed
	// twice: the origin takes it rather than leave it waiting on a.
	cfg := testConfig()
	cfg.MaxInFlightPerPeer = 1
	cfg.BusyBackoff = 0
	s, err := New(layout(2), nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s, []step{
		ev(0, join("a", 2, 0, 1)),
		next(0, r("a", 1)),
		ev(0, RequestRejected{Peer: "a", Piece: 1}),
		next(0, r("a", 1)),
		ev(0, RequestRejected{Peer: "a", Piece: 1}),
		next(0, r("a", 1)),
		ev(0, RequestRejected{Peer: "a", Piece: 1}),
		ev(0, origin("o")),
		ev(0, ReaderAt{Reader: 1, Offset: 0}), // piece 0 first, so a is taken
		next(0, r("a", 0), r("o", 1)),
	})
}

func TestReaderWindowOrder(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlightPerPeer = 10
	cfg.ReaderWindow = 3
	s, err := New(layout(10), bits(10, 4), cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Handle(t0, PeerJoined{Peer: "a", Complete: true})
	_ = s.Handle(t0, ReaderAt{Reader: 7, Offset: 3 * testPieceLength})
	_ = s.Handle(t0, ReaderAt{Reader: 8, Offset: 8 * testPieceLength})
	got := s.Next(t0).Requests
	// Window distance first: 3 and 8 (distance 0), then 9 (distance 1; 4
	// is held), then 5 (distance 2), then the rest in random order.
	wantPrefix := []Request{r("a", 3), r("a", 8), r("a", 5), r("a", 9)}
	if len(got) != 9 {
		t.Fatalf("got %d requests, want 9: %v", len(got), got)
	}
	head := slices.Clone(got[:2])
	slices.SortFunc(head, func(x, y Request) int { return cmp.Compare(x.Piece, y.Piece) })
	if !slices.Equal(head, wantPrefix[:2]) || got[2] != r("a", 9) || got[3] != r("a", 5) {
		t.Fatalf("requests %v: want 3 and 8 first, then 9, then 5", got)
	}
}

func TestNewRejectsZeroConfig(t *testing.T) {
	if _, err := New(layout(4), nil, Config{}); err == nil {
		t.Fatal("New with a zero Config: accepted; it would never request a piece")
	}
}

func TestNewRejectsWrongBitfield(t *testing.T) {
	if _, err := New(layout(4), bits(5), testConfig()); !errors.Is(err, ErrBadPiece) {
		t.Fatalf("New with a 5-piece bitfield for 4 pieces: %v, want ErrBadPiece", err)
	}
}

func TestStats(t *testing.T) {
	s, _ := New(layout(2), nil, testConfig())
	_ = s.Handle(t0, join("a", 2, 0, 1))
	a := s.Next(t0)
	_ = s.Handle(t0, got("a", a.Requests[0].Piece))
	st, ok := s.PeerStats("a")
	if !ok || st.Delivered != 1 || st.InFlight != 1 || st.Origin {
		t.Fatalf("PeerStats(a) = %+v, %v; want 1 delivered, 1 in flight", st, ok)
	}
	if h := s.Have(); h.Count() != 1 || s.Done() {
		t.Fatalf("Have() holds %d pieces, Done %v; want 1, false", h.Count(), s.Done())
	}
	if fl := s.InFlight(); len(fl) != 1 || fl[0] != a.Requests[1] {
		t.Fatalf("InFlight() = %v, want [%v]", fl, a.Requests[1])
	}
}

// TestOriginIsNeverBlacklistedAsUnresponsive: on a slow link every origin
// request can time out, again and again; the origin is still asked (it is
// the last source), and the download completes when its pieces arrive.
func TestOriginIsNeverBlacklistedAsUnresponsive(t *testing.T) {
	s, err := New(layout(2), nil, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Handle(t0, origin("o")); err != nil {
		t.Fatal(err)
	}
	a := s.Next(t0)
	if len(a.Requests) != 2 {
		t.Fatalf("first Next asked %+v, want both pieces from the origin", a.Requests)
	}
	for round := 1; round <= 4; round++ {
		now := t0.Add(time.Duration(round) * 10 * time.Second)
		a = s.Next(now)
		if len(a.Blacklisted) > 0 {
			t.Fatalf("round %d: the origin was blacklisted: %+v", round, a.Blacklisted)
		}
		if len(a.Requests) == 0 {
			t.Fatalf("round %d: after its requests timed out the origin was not asked again (%+v)", round, a)
		}
		for _, r := range a.Requests {
			if r.Peer != "o" {
				t.Fatalf("round %d: request to %s, want the origin", round, r.Peer)
			}
		}
	}
	now := t0.Add(45 * time.Second)
	for i := range 2 {
		if err := s.Handle(now, got("o", i)); err != nil {
			t.Fatal(err)
		}
	}
	if a = s.Next(now); !a.Done {
		t.Fatalf("download not done after the origin delivered every piece: %+v", a)
	}
}
