package seeder

import (
	"testing"
	"time"
)

// link10Mbit is a 10 Mbit/s link in bytes per second.
const link10Mbit = 10e6 / 8

// The rate is measured from whole pieces, which is all the piece data path
// reports: pieces sharing a slow link, each taking longer than any gap a
// byte counter would take for idle, give the link's rate, and the node then
// turns away a piece it would not send within maxUploadWait.
func TestPacerMeasuresASlowLinkFromWholePieces(t *testing.T) {
	const piece = 4 << 20
	var p pacer
	t0 := time.Unix(1000, 0)
	// Two pieces share the link from t0: each ends after 2·piece/R.
	both := time.Duration(2 * piece / link10Mbit * float64(time.Second))
	a, b := p.accept(piece, t0), p.accept(piece, t0)
	if w := p.wait(piece); w != 0 {
		t.Fatalf("wait before any piece ended = %s, want 0 (rate unknown)", w)
	}
	p.end(a, piece, t0.Add(both))
	p.end(b, piece, t0.Add(both))
	// Then pieces one at a time, each taking piece/R (3.4 s).
	one := time.Duration(piece / link10Mbit * float64(time.Second))
	t1 := t0.Add(both + 5*time.Second) // an idle gap, not counted
	for k := range 3 {
		at := t1.Add(time.Duration(k) * one)
		p.end(p.accept(piece, at), piece, at.Add(one))
	}
	if r := p.Rate(); r < 0.95*link10Mbit || r > 1.05*link10Mbit {
		t.Fatalf("rate = %.0f bytes/s, want the link's %.0f", r, link10Mbit)
	}

	t2 := t1.Add(10 * time.Minute)
	if w := p.wait(piece); w != 0 {
		t.Errorf("wait of an idle node = %s, want 0 (it would never measure again)", w)
	}
	p.accept(piece, t2)
	if w := p.wait(piece); w < 6500*time.Millisecond || w > 6900*time.Millisecond {
		t.Errorf("wait for a piece behind one at 10 Mbit/s = %s, want 6.7s", w)
	}
	p.accept(piece, t2)
	if w := p.wait(piece); w <= 10*time.Second {
		t.Errorf("wait for a piece behind two at 10 Mbit/s = %s, want over 10s (the default maxUploadWait turns it away)", w)
	}
}

// A piece sent alone on a fast link gives that link's rate, and a piece
// cut short counts the bytes it sent.
func TestPacerCountsWhatWasSent(t *testing.T) {
	var p pacer
	t0 := time.Unix(1000, 0)
	const rate = 25e6 // 200 Mbit/s
	for k := range 20 {
		at := t0.Add(time.Duration(k) * time.Second)
		sent := int64(4 << 20)
		if k%2 == 1 {
			sent = 1 << 20 // cancelled after 1 MiB
		}
		p.end(p.accept(4<<20, at), sent, at.Add(time.Duration(float64(sent)/rate*float64(time.Second))))
	}
	if r := p.Rate(); r < 0.95*rate || r > 1.05*rate {
		t.Errorf("rate = %.0f bytes/s, want %.0f", r, rate)
	}
	if w := p.wait(4 << 20); w != 0 {
		t.Errorf("wait with nothing accepted = %s, want 0", w)
	}
}
