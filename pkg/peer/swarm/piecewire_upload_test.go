package swarm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/fakeclock"
	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// Two pieces sent side by side on the piece data path, told in write
// rounds as piecewire writes them, measure the link, not half of it: the
// uplink meter's busy refusals (peerRequested, storeSource) go by the rate
// the link has. Reported whole at their common end, the first piece
// brought the whole busy time and the second's bytes went to the next
// sample.
func TestPieceUploadsSentTogetherMeasureTheLink(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PieceListen = "127.0.0.1:0"
	cfg.UploadSlots = 2
	s, _ := newPieceSwarmWith(t, cfg, Options{})
	_, m := holdPieces(t, s, 3, 0, 1)
	clock := fakeclock.New()
	s.upNow = clock.Now
	src := storeSource{s}
	a, err := src.OpenPiece(context.Background(), m.Digest, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := src.OpenPiece(context.Background(), m.Digest, 1)
	if err != nil {
		t.Fatal(err)
	}
	if a.Sent == nil || b.Sent == nil {
		t.Fatal("a piece on the piece data path has no Sent: the uplink meter hears of it only at its end")
	}
	// Both share the link for 4 s (two samples' worth of busy time),
	// written in rounds of a quarter piece each.
	const took = 4 * time.Second
	size := m.PieceSize(0)
	link := float64(2*size) / took.Seconds()
	const rounds = 4
	for range rounds {
		clock.Advance(took / rounds)
		a.Sent(size / rounds)
		b.Sent(size / rounds)
	}
	a.Done(size, nil)
	b.Done(size, nil)
	if r := s.up.Rate(); r < 0.95*link || r > 1.05*link {
		t.Fatalf("uplink rate after two pieces sent together = %.0f bytes/s; want the link's %.0f", r, link)
	}
	if n := s.up.Backlog(); n != 0 {
		t.Fatalf("uplink backlog %d after both pieces went out; want 0", n)
	}
}

// Pieces go out UploadSlots at a time: a request beyond waits for a slot,
// in turn, and takes it when a send ends; one cancelled while it waits
// (its context done) gives up and takes nothing.
func TestPieceUploadsWaitForASlot(t *testing.T) {
	s, _ := newPieceSwarm(t, "127.0.0.1:0") // one slot, the default
	_, m := holdPieces(t, s, 3, 0, 1, 2)
	src := storeSource{s}
	a, err := src.OpenPiece(context.Background(), m.Digest, 0)
	if err != nil {
		t.Fatal(err)
	}
	waiting := openLater(src, m.Digest, 1)
	eventually.True(t, "piece 1 waiting for the slot", func() bool { return s.upSlots.Waiting() == 1 })
	a.Done(a.Size, nil) // the slot goes to piece 1
	got := <-waiting
	if got.err != nil {
		t.Fatalf("piece 1, waiting for the slot piece 0 held: %v; want it opened once piece 0 went out", got.err)
	}
	// A third, cancelled while it waits, gives up. (It asks once piece 1
	// has the slot: with the rate not measured, one waiting already would
	// make it busy.)
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := src.OpenPiece(ctx, m.Digest, 2)
		gaveUp <- err
	}()
	eventually.True(t, "piece 2 waiting for the slot", func() bool { return s.upSlots.Waiting() == 1 })
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("piece 2 cancelled while it waited: %v; want context.Canceled", err)
	}
	if n := s.upSlots.Waiting(); n != 0 {
		t.Fatalf("%d requests counted as waiting after the cancel; want 0", n)
	}
	got.p.Done(got.p.Size, nil)
	c, err := src.OpenPiece(context.Background(), m.Digest, 2)
	if err != nil {
		t.Fatalf("piece 2 asked again with the slot free: %v", err)
	}
	c.Done(c.Size, nil)
}

// With the uplink's rate not measured yet, one request per slot may wait;
// the next is answered busy at once rather than queued for an unknown
// time.
func TestPieceUploadsBeyondASlotsWorthWaitingAreBusyUntilTheLinkIsMeasured(t *testing.T) {
	s, _ := newPieceSwarm(t, "127.0.0.1:0")
	_, m := holdPieces(t, s, 3, 0, 1, 2)
	src := storeSource{s}
	a, err := src.OpenPiece(context.Background(), m.Digest, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Done(a.Size, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = src.OpenPiece(ctx, m.Digest, 1) }()
	eventually.True(t, "piece 1 waiting for the slot", func() bool { return s.upSlots.Waiting() == 1 })
	_, err = src.OpenPiece(context.Background(), m.Digest, 2)
	var re *piecewire.RejectError
	if !errors.As(err, &re) || re.Reason != piecewire.ReasonBusy {
		t.Fatalf("piece 2 with piece 1 waiting for the one slot, the link not measured: %v; want a busy reject", err)
	}
}

// The slot goes to the piece the fewest of this agent's peers hold: a
// request for a piece no peer holds, refused a place to wait, takes the
// place of one for a piece two peers hold, and is sent next.
func TestPieceUploadsForThePieceFewestPeersHoldGoFirst(t *testing.T) {
	s, _ := newPieceSwarm(t, "127.0.0.1:0") // one slot; link not measured: one may wait
	_, m := holdPieces(t, s, 4, 0, 1, 2, 3)
	s.mu.Lock()
	bs := s.blobLocked(m.Digest)
	for id, pieces := range map[string][]int{"peer-a": {1, 2}, "peer-b": {2}} {
		bf := metainfo.NewBitfield(m.NumPieces())
		for _, i := range pieces {
			bf.Set(i)
		}
		bs.conns[newConn(s, m, nil, id, bf)] = struct{}{}
	}
	s.mu.Unlock()
	src := storeSource{s}
	a, err := src.OpenPiece(context.Background(), m.Digest, 0)
	if err != nil {
		t.Fatal(err)
	}
	held2 := openLater(src, m.Digest, 2) // two peers hold it
	eventually.True(t, "piece 2 waiting for the slot", func() bool { return s.upSlots.Waiting() == 1 })
	held0 := openLater(src, m.Digest, 3) // no peer holds it
	var re *piecewire.RejectError
	if got := <-held2; !errors.As(got.err, &re) || re.Reason != piecewire.ReasonBusy {
		t.Fatalf("piece 2 (two peers hold it), waiting when a request for piece 3 (none does) came: %v; want busy", got.err)
	}
	if _, err := src.OpenPiece(context.Background(), m.Digest, 1); !errors.As(err, &re) || re.Reason != piecewire.ReasonBusy {
		t.Fatalf("piece 1 (one peer holds it) with piece 3 waiting: %v; want busy", err)
	}
	a.Done(a.Size, nil)
	got := <-held0
	if got.err != nil {
		t.Fatalf("piece 3, waiting for the slot piece 0 held: %v", got.err)
	}
	got.p.Done(got.p.Size, nil)
}

type opened struct {
	p   *piecewire.Piece
	err error
}

// openLater opens piece i of d from src on a goroutine of its own.
func openLater(src storeSource, d digest.Digest, i int) <-chan opened {
	got := make(chan opened, 1)
	go func() {
		p, err := src.OpenPiece(context.Background(), d, i)
		got <- opened{p, err}
	}()
	return got
}
