package seeder

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/fakeclock"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// agent is the recipient of the one stream of agent peer.
func agent(peer string) recipient { return recipient{peer: peer} }

func TestLedgerGivesAPieceToOneAgentPerWindow(t *testing.T) {
	l := newLedger(2*time.Second, 30*time.Second, nil, nil)
	take := func(b *blobLedger, i int, peer string, now time.Time) time.Duration {
		w, _ := l.take(b, i, agent(peer), now)
		return w
	}
	d := digest.FromString("blob")
	b := l.open(d, 4, 4<<20)
	t0 := time.Unix(1000, 0)

	if w := take(b, 0, "a", t0); w != 0 {
		t.Fatalf("first ask of piece 0: wait %s, want 0", w)
	}
	if w := take(b, 0, "b", t0.Add(time.Second)); w != 2*time.Second {
		t.Errorf("piece 0 while it is being sent to a: wait %s, want the minimum window 2s", w)
	}
	if w := take(b, 1, "b", t0.Add(time.Second)); w != 0 {
		t.Errorf("another piece for b: wait %s, want 0 (only the piece waits)", w)
	}
	// The send to a took 5s: the window is 2 x 5s.
	l.done(b, 0, agent("a"), t0.Add(5*time.Second), true)
	if w := take(b, 0, "b", t0.Add(8*time.Second)); w != 7*time.Second {
		t.Errorf("piece 0, 3s after a got it in 5s: wait %s, want 10s - 3s = 7s", w)
	}
	if w := take(b, 0, "a", t0.Add(8*time.Second)); w != 0 {
		t.Errorf("a asking again for its own piece: wait %s, want 0", w)
	}
	l.done(b, 0, agent("a"), t0.Add(9*time.Second), true) // took 1s: window 2s
	if w := take(b, 0, "b", t0.Add(10*time.Second)); w != time.Second {
		t.Errorf("piece 0, 1s after a got it in 1s: wait %s, want 2s - 1s = 1s", w)
	}
	if w := take(b, 0, "b", t0.Add(11*time.Second)); w != 0 {
		t.Errorf("piece 0 after the window: wait %s, want 0", w)
	}

	// A send that did not complete frees the piece at once.
	if w := take(b, 2, "a", t0); w != 0 {
		t.Fatal(w)
	}
	l.done(b, 2, agent("a"), t0.Add(time.Second), false)
	if w := take(b, 2, "b", t0.Add(time.Second)); w != 0 {
		t.Errorf("piece 2 after a's send was cancelled: wait %s, want 0", w)
	}

	// The window never exceeds the maximum.
	if w := take(b, 3, "a", t0); w != 0 {
		t.Fatal(w)
	}
	l.done(b, 3, agent("a"), t0.Add(time.Hour), true)
	if w := take(b, 3, "b", t0.Add(time.Hour)); w != 30*time.Second {
		t.Errorf("piece 3 that took an hour: wait %s, want the maximum 30s", w)
	}

	// The record lives while streams for the blob are open.
	b2 := l.open(d, 4, 4<<20)
	l.close(d, b, t0)
	if b2 != b || len(l.blobs) != 1 {
		t.Fatalf("second stream of the blob got another record")
	}
	l.close(d, b2, t0)
	if len(l.blobs) != 0 {
		t.Errorf("%d blob records left after every stream closed", len(l.blobs))
	}
	b3 := l.open(d, 1, 1<<20)
	if _, again := l.take(b3, 0, agent("a"), t0); again {
		t.Error("first send of a piece reported as a send again")
	}
	l.done(b3, 0, agent("a"), t0.Add(time.Second), true)
	if _, again := l.take(b3, 0, agent("b"), t0.Add(time.Minute)); !again {
		t.Error("second send of a piece, after the window, not reported as a send again")
	}
	// A grant withdrawn (no upload slot) leaves the record as it was.
	l.undo(b3, 0, agent("b"))
	if w, again := l.take(b3, 0, agent("c"), t0.Add(time.Minute)); w != 0 || !again {
		t.Errorf("after an undone grant: wait %s, again %v; want the record of a's send (0, true)", w, again)
	}
	l.undo(b3, 0, agent("c"))
	if w, _ := l.take(b3, 0, agent("d"), t0.Add(time.Minute+time.Second)); w != 0 {
		t.Errorf("undo kept a grant: wait %s", w)
	}
	l.close(d, b3, t0)
	if newLedger(0, time.Minute, nil, nil) != nil {
		t.Error("superseedWindow 0 should turn superseeding off")
	}
}

// The window is at least the time the swarm takes to spread the blob,
// blobSpread times what this node's link takes to send it once.
func TestLedgerWindowCoversTheSwarmSpreadingTheBlob(t *testing.T) {
	var rate float64 // bytes per second; 0 while unmeasured
	l := newLedger(2*time.Second, 5*time.Minute, func() float64 { return rate }, nil)
	d := digest.FromString("blob")
	b := l.open(d, 64, 64<<20) // 64 MiB
	t0 := time.Unix(1000, 0)
	if w, _ := l.take(b, 0, agent("a"), t0); w != 0 {
		t.Fatal(w)
	}
	l.done(b, 0, agent("a"), t0.Add(3*time.Second), true) // took 3s
	if w, _ := l.take(b, 0, agent("b"), t0.Add(3*time.Second)); w != 6*time.Second {
		t.Errorf("rate unknown: wait %s, want twice the send time, 6s", w)
	}
	// At 1 MiB/s the node needs 64s to send the blob once; the swarm
	// three times that.
	rate = 1 << 20
	if w, _ := l.take(b, 0, agent("b"), t0.Add(3*time.Second)); w != 192*time.Second {
		t.Errorf("64 MiB blob at 1 MiB/s: wait %s, want 3 x 64s", w)
	}
	if w, _ := l.take(b, 0, agent("b"), t0.Add(70*time.Second)); w != 125*time.Second {
		t.Errorf("64 MiB blob at 1 MiB/s, 67s after the send: wait %s, want 125s (one blob's send time is too short: the swarm is still spreading it)", w)
	}
	// At 100 MiB/s that is under two seconds: twice the send time again.
	rate = 100 << 20
	if w, _ := l.take(b, 0, agent("b"), t0.Add(3*time.Second)); w != 6*time.Second {
		t.Errorf("64 MiB blob at 100 MiB/s: wait %s, want 6s", w)
	}
	// Never beyond the maximum.
	rate = 1 << 10
	if w, _ := l.take(b, 0, agent("b"), t0.Add(3*time.Second)); w != 5*time.Minute {
		t.Errorf("64 MiB blob at 1 KiB/s: wait %s, want the maximum 5m", w)
	}
	l.close(d, b, t0)
}

// Through real streams: while agent a is given piece 0, agent b asking for
// it is told to get it from the swarm (with a retry time), yet is served
// other pieces; a asking again is served; once the window has passed, b is
// served piece 0 too.
func TestSeederSendsOtherAgentsToTheSwarm(t *testing.T) {
	d := inmemory.New()
	blob, _ := randomBlob(t, 8<<20)
	dg := putBlob(t, d, blob)
	const window = 300 * time.Millisecond
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) {
		c.SuperseedWindow = window
		c.SuperseedMaxWindow = window
	})
	m := getMetainfo(t, s.client(), dg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func(id string) peerpb.Peer_ExchangeClient {
		st, err := s.client().Exchange(ctx)
		if err != nil {
			t.Fatal(err)
		}
		handshakeAs(t, st, dg, id)
		return st
	}
	receive := func(st peerpb.Peer_ExchangeClient, i uint32) *peerpb.Reject {
		t.Helper()
		return receiveAnswer(t, st, m, i)
	}

	a, b := open("agent-a"), open("agent-b")
	request(t, a, 0)
	if r := receive(a, 0); r != nil {
		t.Fatalf("first ask of piece 0 rejected: %v", r)
	}
	request(t, b, 0)
	r := receive(b, 0)
	if r.GetReason() != peerpb.Reject_REASON_AT_PEERS || r.RetryAfterMs == 0 || time.Duration(r.RetryAfterMs)*time.Millisecond > window+time.Millisecond {
		t.Fatalf("b asking for piece 0 just sent to a: %v, want REASON_AT_PEERS with a retry time in (0, %s]", r, window)
	}
	request(t, b, 1)
	if r := receive(b, 1); r != nil {
		t.Fatalf("b asking for piece 1 after an AT_PEERS of piece 0: %v, want the piece", r)
	}
	request(t, a, 0)
	if r := receive(a, 0); r != nil {
		t.Fatalf("a asking again for its own piece: %v, want the piece", r)
	}
	var last *peerpb.Reject
	if err := eventually.Wait(eventually.Timeout, func() bool {
		request(t, b, 0)
		last = receive(b, 0)
		if last != nil && last.GetReason() != peerpb.Reject_REASON_AT_PEERS {
			t.Fatalf("b asking for piece 0 again: %v, want the piece or REASON_AT_PEERS", last)
		}
		return last == nil
	}); err != nil {
		t.Fatalf("waiting for b to be served piece 0 once the %s window passed: %v; last answer %v", window, err, last)
	}
	if n := counter(t, s.m.rejects.WithLabelValues("at_peers")); n < 1 {
		t.Errorf("at_peers rejects = %.0f, want at least 1", n)
	}
}

func TestLedgerReleasesTheGrantsOfABrokenStream(t *testing.T) {
	l := newLedger(time.Minute, time.Minute, nil, nil)
	d := digest.FromString("blob")
	b := l.open(d, 2, 2<<20)
	t0 := time.Unix(1000, 0)
	l.take(b, 0, agent("a"), t0)
	l.done(b, 0, agent("a"), t0.Add(time.Second), true)
	l.take(b, 1, agent("a"), t0.Add(time.Second))
	l.release(b, agent("a"), t0.Add(2*time.Second))
	for i := range 2 {
		if w, again := l.take(b, i, agent("b"), t0.Add(2*time.Second)); w != 0 || !again {
			t.Errorf("piece %d after a's stream broke: wait %s, again %v; want 0, true", i, w, again)
		}
	}
}

// A broken connection counts as connection_broken only the grants it
// frees: one whose window was over already goes to the next agent asking
// as window_over.
func TestLedgerCountsAsBrokenOnlyTheGrantsABreakFrees(t *testing.T) {
	s := &Server{m: newMetrics(nil), log: slog.New(slog.DiscardHandler)}
	l := newLedger(time.Minute, time.Minute, nil, s.grantFreed)
	freed := func(reason string) float64 { return counter(t, s.m.grantsFreed.WithLabelValues(reason)) }
	d := digest.FromString("blob")
	b := l.open(d, 2, 2<<20)
	clock := fakeclock.New()
	l.take(b, 0, agent("a"), clock.Now())
	l.done(b, 0, agent("a"), clock.Now(), true)
	clock.Advance(2 * time.Minute) // piece 0's window is over
	l.take(b, 1, agent("a"), clock.Now())
	l.done(b, 1, agent("a"), clock.Now(), true)
	l.release(b, agent("a"), clock.Now())
	if n := freed(freedConnBroken); n != 1 {
		t.Errorf("connection_broken = %v, want 1 (piece 1, within its window)", n)
	}
	for i := range 2 {
		if w, _ := l.take(b, i, agent("b"), clock.Now()); w != 0 {
			t.Errorf("piece %d after a's stream broke: wait %s, want 0", i, w)
		}
	}
	if n := freed(freedWindowOver); n != 1 {
		t.Errorf("window_over = %v, want 1 (piece 0)", n)
	}
}

// Through real streams: an agent given a piece vanishes (its stream is
// cancelled); the next agent asking is served without waiting out the
// one-minute window.
func TestSeederFreesThePiecesOfAVanishedAgent(t *testing.T) {
	d := inmemory.New()
	blob, _ := randomBlob(t, 4<<20)
	dg := putBlob(t, d, blob)
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) {
		c.SuperseedWindow = time.Minute
		c.SuperseedMaxWindow = time.Minute
	})
	m := getMetainfo(t, s.client(), dg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	actx, acancel := context.WithCancel(ctx)
	a, err := s.client().Exchange(actx)
	if err != nil {
		t.Fatal(err)
	}
	handshakeAs(t, a, dg, "agent-a")
	request(t, a, 0)
	var got int64
	for got < m.PieceSize(0) {
		msg, err := a.Recv()
		if err != nil || msg.GetChunk() == nil {
			t.Fatalf("agent a: %v, %v; want chunks of piece 0", msg, err)
		}
		got += int64(len(msg.GetChunk().Data))
	}
	acancel() // a vanishes without closing its side

	b, err := s.client().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	handshakeAs(t, b, dg, "agent-b")
	// The server notices a's cancellation asynchronously; until then b is
	// sent to the swarm. It must be served well before the minute is up:
	// the wait stops at half of it, so that a pass cannot come from the
	// window running out.
	var last *peerpb.Message
	if err := eventually.Wait(30*time.Second, func() bool {
		request(t, b, 0)
		msg, err := b.Recv()
		if err != nil {
			t.Fatal(err)
		}
		last = msg
		if msg.GetChunk() != nil {
			return true // served: a's grant was released
		}
		if msg.GetReject().GetReason() != peerpb.Reject_REASON_AT_PEERS {
			t.Fatalf("agent b: %v, want a chunk or REASON_AT_PEERS", msg)
		}
		return false
	}); err != nil {
		t.Fatalf("waiting for b to be served piece 0 after a vanished: %v; last answer %v", err, last)
	}
}

// A node whose link is slower than what it accepted answers BUSY for a
// piece it would not send within maxUploadWait.
func TestSeederRefusesWhatItsLinkWouldNotSendInTime(t *testing.T) {
	d := inmemory.New()
	blob, _ := randomBlob(t, 16<<20)
	dg := putBlobPieces(t, d, blob)
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) {
		c.EgressBytesPerSecond = 2 << 20
		c.MaxUploadWait = 2 * time.Second
	})
	m := getMetainfo(t, s.client(), dg)
	if m.NumPieces() < 4 {
		t.Fatalf("%d pieces, the test needs 4", m.NumPieces())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := s.client().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	handshakeAs(t, a, dg, "agent-a")
	for i := range 3 {
		request(t, a, uint32(i))
	}
	// Three seconds of sending at 2 MiB/s measure the rate.
	for k := 0; k < 6; k++ {
		if msg, err := a.Recv(); err != nil || msg.GetChunk() == nil {
			t.Fatalf("agent a: %v, %v; want chunks", msg, err)
		}
	}
	b, err := s.client().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	handshakeAs(t, b, dg, "agent-b")
	request(t, b, 3)
	msg, err := b.Recv()
	if err != nil || msg.GetReject().GetReason() != peerpb.Reject_REASON_BUSY || msg.GetReject().GetIndex() != 3 {
		t.Fatalf("agent b asking for a 4 MiB piece behind ~6 MiB at 2 MiB/s, with maxUploadWait 2s: %v, %v; want Reject{3, BUSY}", msg, err)
	}
}

// An agent's stream and its piece connection are recipients of their own:
// the one that breaks frees what it was given, not what the agent got over
// the other (which may be with the swarm already), while the agent is
// served again on either.
func TestLedgerReleasesOnlyTheGrantsOfTheBrokenConnection(t *testing.T) {
	l := newLedger(time.Minute, time.Minute, nil, nil)
	d := digest.FromString("blob")
	b := l.open(d, 2, 2<<20)
	t0 := time.Unix(1000, 0)
	stream, pieces := recipient{peer: "a", via: 1}, recipient{peer: "a", via: 2}
	l.take(b, 0, stream, t0)
	l.done(b, 0, stream, t0.Add(time.Second), true)
	l.take(b, 1, pieces, t0)
	l.done(b, 1, pieces, t0.Add(time.Second), true)
	if w, _ := l.take(b, 1, stream, t0.Add(2*time.Second)); w != 0 {
		t.Fatalf("agent a asking on its stream for the piece its piece connection got: wait %s, want 0 (one agent)", w)
	}
	l.undo(b, 1, stream)

	l.release(b, pieces, t0.Add(2*time.Second))
	if w, again := l.take(b, 1, agent("b"), t0.Add(2*time.Second)); w != 0 || !again {
		t.Errorf("piece 1 after a's piece connection, which got it, broke: wait %s, again %v; want 0, true", w, again)
	}
	if w, _ := l.take(b, 0, agent("b"), t0.Add(2*time.Second)); w == 0 {
		t.Error("piece 0, given on a's stream, is free after a's piece connection broke; want it kept at a (its stream is fine)")
	}
}

// Each way a grant is freed for the next agent is counted by its reason
// (and logged); what is not freed (a grant still in its window, a piece
// asked for again by its own agent, a freed one freed again) is not.
func TestLedgerCountsWhyGrantsAreFreed(t *testing.T) {
	var logged bytes.Buffer
	s := &Server{m: newMetrics(nil), log: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l := newLedger(time.Minute, time.Minute, nil, s.grantFreed)
	freed := func(reason string) float64 { return counter(t, s.m.grantsFreed.WithLabelValues(reason)) }
	d := digest.FromString("blob")
	b := l.open(d, 4, 4<<20)
	clock := fakeclock.New()
	a, aPieces := recipient{peer: "a", via: 1}, recipient{peer: "a", via: 2}

	// Piece 0 sent to a; b asks within the window, a asks again: kept.
	l.take(b, 0, a, clock.Now())
	clock.Advance(time.Second)
	l.done(b, 0, a, clock.Now(), true)
	if w, _ := l.take(b, 0, agent("b"), clock.Now().Add(30*time.Second)); w == 0 {
		t.Fatal("piece 0 given to b within a's window")
	}
	l.take(b, 0, a, clock.Now())
	l.done(b, 0, a, clock.Now(), true)
	// Once the window is over, b is given it.
	clock.Advance(time.Minute)
	if w, _ := l.take(b, 0, agent("b"), clock.Now()); w != 0 {
		t.Fatalf("piece 0 after a's window: wait %s", w)
	}
	l.done(b, 0, agent("b"), clock.Now(), true)
	if n := freed(freedWindowOver); n != 1 {
		t.Errorf("window_over = %v, want 1", n)
	}

	// Piece 1's send to a is cancelled.
	l.take(b, 1, a, clock.Now())
	l.done(b, 1, a, clock.Now(), false)
	if n := freed(freedSendIncomplete); n != 1 {
		t.Errorf("send_incomplete = %v, want 1", n)
	}

	// Pieces 2 and 3 go over a's piece connection, which breaks while
	// piece 3 is being sent; a's stream, which got piece 0, is fine.
	l.take(b, 2, aPieces, clock.Now())
	l.done(b, 2, aPieces, clock.Now(), true)
	l.take(b, 3, aPieces, clock.Now())
	l.release(b, aPieces, clock.Now())
	l.release(b, aPieces, clock.Now()) // nothing left to free
	if n := freed(freedConnBroken); n != 2 {
		t.Errorf("connection_broken = %v, want 2 (pieces 2 and 3)", n)
	}

	// The blob's last stream closes while piece 1 is being sent to c: its
	// grant is forgotten. Pieces 0 and 2, whose windows are over, and 3
	// (freed) are not counted.
	l.take(b, 2, agent("c"), clock.Now())
	l.done(b, 2, agent("c"), clock.Now(), true)
	clock.Advance(2 * time.Minute) // piece 2's window is over
	l.take(b, 1, agent("c"), clock.Now())
	l.close(d, b, clock.Now())
	if n := freed(freedStreamsClosed); n != 1 {
		t.Errorf("streams_closed = %v, want 1 (piece 1, being sent to c)", n)
	}
	for _, r := range []string{freedWindowOver, freedSendIncomplete, freedConnBroken} {
		if n, want := freed(r), map[string]float64{freedWindowOver: 1, freedSendIncomplete: 1, freedConnBroken: 2}[r]; n != want {
			t.Errorf("%s = %v after the close, want still %v", r, n, want)
		}
	}
	for _, want := range []string{"reason=window_over", "reason=send_incomplete", "reason=connection_broken", "reason=streams_closed", "piece=3", "sent_ago=1m0s"} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("debug log lacks %q:\n%s", want, logged.String())
		}
	}
}

// On a slow link a piece is being sent for a long time (a 4 MiB piece
// shared with 15 others at 10 Mbit/s: 54 s): its grant holds however long
// that takes, past any window, and its window counts from the send's end.
// Only the send's failure, or its connection breaking, frees it early.
func TestLedgerHoldsAGrantWhileItsPieceIsBeingSent(t *testing.T) {
	const piece = 4 << 20
	rate := 10e6 / 8
	l := newLedger(15*time.Second, 2*time.Minute, func() float64 { return rate }, nil)
	d := digest.FromString("blob")
	b := l.open(d, 16, 16*piece)
	clock := fakeclock.New()
	a := recipient{peer: "a", via: 1}
	if w, _ := l.take(b, 0, a, clock.Now()); w != 0 {
		t.Fatal(w)
	}
	for range 10 {
		clock.Advance(time.Minute)
		if w, _ := l.take(b, 0, agent("b"), clock.Now()); w == 0 {
			t.Fatalf("piece 0 given to b while still being sent to a, %s after it started", clock.Now().Sub(fakeclock.Start))
		}
	}
	l.done(b, 0, a, clock.Now(), true)
	clock.Advance(2*time.Minute - time.Second)
	if w, _ := l.take(b, 0, agent("b"), clock.Now()); w != time.Second {
		t.Errorf("piece 0, 1m59s after its 10m send ended: wait %s, want the 2m window's last 1s", w)
	}
	clock.Advance(time.Second)
	if w, again := l.take(b, 0, agent("b"), clock.Now()); w != 0 || !again {
		t.Errorf("piece 0 once its window is over: wait %s, again %v; want 0, true", w, again)
	}
	l.close(d, b, clock.Now())
}

// An agent that asks again over its stream for a piece being sent to it
// over its piece connection (a retry after a cancel, on a slow link) and
// cancels that second send keeps the piece: the first send still brings
// it, so the next agent is sent to the swarm, not given it again. The
// first send's end counts for the window even if it comes while the
// second holds the record (and the second is then withdrawn).
func TestLedgerKeepsAPieceOnItsWayOverTheAgentsOtherConnection(t *testing.T) {
	l := newLedger(15*time.Second, 2*time.Minute, nil, nil)
	d := digest.FromString("blob")
	b := l.open(d, 3, 12<<20)
	clock := fakeclock.New()
	pieces, stream := recipient{peer: "a", via: 1}, recipient{peer: "a", via: 2}

	l.take(b, 0, pieces, clock.Now())
	clock.Advance(20 * time.Second) // a's piece timeout: it asks again
	if w, again := l.take(b, 0, stream, clock.Now()); w != 0 || !again {
		t.Fatalf("a asking again on its stream: wait %s, again %v; want 0, true", w, again)
	}
	clock.Advance(time.Second)
	l.done(b, 0, stream, clock.Now(), false) // cancelled
	if w, _ := l.take(b, 0, agent("b"), clock.Now()); w == 0 {
		t.Fatal("piece 0 given to b while it is still being sent to a over a's piece connection")
	}
	clock.Advance(10 * time.Second)
	l.done(b, 0, pieces, clock.Now(), true)
	if w, _ := l.take(b, 0, agent("b"), clock.Now().Add(61*time.Second)); w != time.Second {
		t.Errorf("piece 0, 61s after its 31s send to a ended: wait %s, want 1s of the 62s window", w)
	}

	// Piece 1: the first send ends while the second holds the record,
	// and the second gets no upload slot.
	l.take(b, 1, pieces, clock.Now())
	l.take(b, 1, stream, clock.Now())
	clock.Advance(5 * time.Second)
	l.done(b, 1, pieces, clock.Now(), true)
	l.undo(b, 1, stream)
	clock.Advance(15 * time.Second)
	if w, again := l.take(b, 1, agent("b"), clock.Now()); w != 0 || !again {
		t.Errorf("piece 1, 15s after its send to a ended: wait %s, again %v; want 0, true (the window over, not the send held forever)", w, again)
	}

	// A broken piece connection takes its earlier grant with it.
	l.take(b, 2, pieces, clock.Now())
	l.take(b, 2, stream, clock.Now())
	l.release(b, pieces, clock.Now())
	l.done(b, 2, stream, clock.Now(), false)
	if w, _ := l.take(b, 2, agent("c"), clock.Now()); w != 0 {
		t.Errorf("piece 2 after both of a's sends failed: wait %s, want 0", w)
	}
	l.close(d, b, clock.Now())
}
