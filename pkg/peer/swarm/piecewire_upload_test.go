package swarm

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/fakeclock"
)

// Two pieces sent side by side on the piece data path, told in write
// rounds as piecewire writes them, measure the link, not half of it: the
// uplink meter's busy refusals (peerRequested, storeSource) go by the rate
// the link has. Reported whole at their common end, the first piece
// brought the whole busy time and the second's bytes went to the next
// sample.
func TestPieceUploadsSentTogetherMeasureTheLink(t *testing.T) {
	s, _ := newPieceSwarm(t, "127.0.0.1:0")
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
