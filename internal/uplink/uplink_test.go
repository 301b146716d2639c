package uplink

import (
	"testing"
	"time"
)

// clock is a settable clock for Add.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestMeterMeasuresTheRateWhileBusy(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	u := Meter{now: c.now}
	if w, r := u.Wait(4<<20), u.Rate(); w != 0 || r != 0 {
		t.Fatalf("before any send: wait %s, rate %v; want 0, 0 (rate unknown)", w, r)
	}
	// 1 MiB chunks, one every 0.5 s for 2 s: 2 MiB/s.
	u.Add(4 << 20)
	for range 4 {
		c.t = c.t.Add(500 * time.Millisecond)
		u.Sent(1<<20, c.t)
		u.Add(-1 << 20)
	}
	if r := u.Rate(); r < 1.95*(1<<20) || r > 2.05*(1<<20) {
		t.Errorf("rate = %.0f bytes/s, want 2 MiB/s", r)
	}
	u.Add(6 << 20)
	if w := u.Wait(4 << 20); w < 4900*time.Millisecond || w > 5100*time.Millisecond {
		t.Errorf("wait for 4 MiB behind 6 MiB at 2 MiB/s = %s, want 5s", w)
	}
	u.Add(-6 << 20)
	// A long idle time is not counted: after it, 1 MiB every 0.25 s is
	// 4 MiB/s and the estimate moves towards it.
	c.t = c.t.Add(time.Hour)
	u.Add(8 << 20)
	for range 8 {
		c.t = c.t.Add(250 * time.Millisecond)
		u.Sent(1<<20, c.t)
		u.Add(-1 << 20)
	}
	u.Add(6 << 20)
	if w := u.Wait(4 << 20); w < 3300*time.Millisecond || w > 3400*time.Millisecond {
		t.Errorf("wait after a faster busy period = %s, want 10 MiB at 3 MiB/s (the mean of 2 and 4) = 3.33s", w)
	}
	u.Add(-6 << 20)
	if b := u.Backlog(); b != 0 {
		t.Errorf("backlog = %d, want 0", b)
	}
}

// A host that reports each piece's bytes once the whole piece went out
// (the piece data path) is measured too, however long a piece takes: the
// time between its reports is busy time, not idle.
func TestMeterMeasuresWholePiecesOnASlowLink(t *testing.T) {
	const piece, rate = 4 << 20, 10e6 / 8 // 10 Mbit/s: 3.4 s a piece
	c := &clock{t: time.Unix(1000, 0)}
	u := Meter{now: c.now}
	one := time.Duration(piece / rate * float64(time.Second))
	for range 3 {
		c.t = c.t.Add(time.Millisecond) // the next request comes
		u.Add(piece)
		c.t = c.t.Add(one)
		u.Add(-piece)
		u.Sent(piece, c.t)
	}
	if r := u.Rate(); r < 0.95*rate || r > 1.05*rate {
		t.Fatalf("rate = %.0f bytes/s, want the link's %.0f", r, rate)
	}
	u.Add(2 * piece)
	if w := u.Wait(piece); w <= 10*time.Second {
		t.Errorf("wait for a piece behind two at 10 Mbit/s = %s, want over 10s", w)
	}
}

// An idle host takes a request whatever rate it measured last: its rate is
// measured only while it sends, so refusing would keep a slow estimate
// forever and the host would refuse every request after it.
func TestMeterAdmitsARequestWhenIdle(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	u := Meter{now: c.now}
	// 256 KiB every 0.5 s for 2 s: 512 KiB/s, too slow for a 4 MiB piece
	// within seconds.
	u.Add(1 << 20)
	for range 4 {
		c.t = c.t.Add(500 * time.Millisecond)
		u.Sent(256<<10, c.t)
		u.Add(-256 << 10)
	}
	if r := u.Rate(); r <= 0 {
		t.Fatalf("rate = %v after a busy period, want it measured", r)
	}
	if w := u.Wait(4 << 20); w != 0 {
		t.Errorf("wait for 4 MiB with nothing waiting to be sent = %s, want 0: an idle host that refuses never measures its rate again", w)
	}
	u.Add(4 << 20)
	if w := u.Wait(4 << 20); w < 15900*time.Millisecond || w > 16100*time.Millisecond {
		t.Errorf("wait for 4 MiB behind 4 MiB at 512 KiB/s = %s, want 16s", w)
	}
}

// link10Mbit is a 10 Mbit/s link in bytes per second.
const link10Mbit = 10e6 / 8

// Pieces sent whole beside one another, each reported only at its end,
// give the link's rate: each piece's bytes count with its share of the
// time the link was busy, so a sample that closes while other pieces are
// half sent leaves neither their bytes nor their time in it. The node then
// turns away a piece it would not send within its limit.
func TestMeterMeasuresPiecesSentTogether(t *testing.T) {
	const piece = 4 << 20
	var u Meter
	t0 := time.Unix(1000, 0)
	// Two pieces share the link from t0 and end together after 2·piece/R
	// (6.7 s, three samples' worth of busy time).
	both := time.Duration(2 * piece / link10Mbit * float64(time.Second))
	a, b := u.Start(piece, t0), u.Start(piece, t0)
	if w := u.Wait(piece); w != 0 {
		t.Fatalf("wait before any piece ended = %s, want 0 (rate unknown)", w)
	}
	for _, s := range []*Send{a, b} {
		s.Sent(piece, t0.Add(both))
		s.End(t0.Add(both))
		if r := u.Rate(); r < 0.95*link10Mbit || r > 1.05*link10Mbit {
			t.Fatalf("rate after a piece sent beside another = %.0f bytes/s, want the link's %.0f", r, link10Mbit)
		}
	}
	// Three pieces, each started halfway through the one before: the
	// first and second share the link for a piece time, then the second
	// and third; the third ends alone half a piece time later.
	one := time.Duration(piece / link10Mbit * float64(time.Second))
	t1 := t0.Add(both + 5*time.Second) // an idle gap, not counted
	s1 := u.Start(piece, t1)
	s2 := u.Start(piece, t1.Add(one/2))
	s1.Sent(piece, t1.Add(3*one/2))
	s1.End(t1.Add(3 * one / 2))
	s3 := u.Start(piece, t1.Add(3*one/2))
	s2.Sent(piece, t1.Add(5*one/2))
	s2.End(t1.Add(5 * one / 2))
	s3.Sent(piece, t1.Add(3*one))
	s3.End(t1.Add(3 * one))
	if r := u.Rate(); r < 0.95*link10Mbit || r > 1.05*link10Mbit {
		t.Fatalf("rate after overlapping pieces = %.0f bytes/s, want the link's %.0f", r, link10Mbit)
	}
	if b := u.Backlog(); b != 0 {
		t.Fatalf("backlog = %d after every piece ended, want 0", b)
	}

	t2 := t1.Add(10 * time.Minute)
	if w := u.Wait(piece); w != 0 {
		t.Errorf("wait of an idle node = %s, want 0 (it would never measure again)", w)
	}
	u.Start(piece, t2)
	if w := u.Wait(piece); w < 6500*time.Millisecond || w > 6900*time.Millisecond {
		t.Errorf("wait for a piece behind one at 10 Mbit/s = %s, want 6.7s", w)
	}
	u.Start(piece, t2)
	if w := u.Wait(piece); w <= 10*time.Second {
		t.Errorf("wait for a piece behind two at 10 Mbit/s = %s, want over 10s", w)
	}
}

// A send cut short counts the bytes it sent, over the time it took, and
// leaves the backlog whole; a send reported in chunks takes each off the
// backlog as it goes.
func TestMeterCountsWhatWasSent(t *testing.T) {
	var u Meter
	t0 := time.Unix(1000, 0)
	const rate = 25e6 // 200 Mbit/s
	for k := range 20 {
		at := t0.Add(time.Duration(k) * time.Second)
		sent := int64(4 << 20)
		if k%2 == 1 {
			sent = 1 << 20 // cancelled after 1 MiB
		}
		s := u.Start(4<<20, at)
		end := at.Add(time.Duration(float64(sent) / rate * float64(time.Second)))
		s.Sent(sent, end)
		s.End(end)
	}
	if r := u.Rate(); r < 0.95*rate || r > 1.05*rate {
		t.Errorf("rate = %.0f bytes/s, want %.0f", r, rate)
	}
	if w, b := u.Wait(4<<20), u.Backlog(); w != 0 || b != 0 {
		t.Errorf("with nothing accepted: wait %s, backlog %d; want 0, 0", w, b)
	}

	t1 := t0.Add(time.Hour)
	s := u.Start(4<<20, t1)
	s.Sent(1<<20, t1.Add(time.Second))
	if b := u.Backlog(); b != 3<<20 {
		t.Errorf("backlog after 1 MiB of a 4 MiB send = %d, want 3 MiB", b)
	}
	s.Sent(8<<20, t1.Add(2*time.Second)) // more than was left: the rest
	s.End(t1.Add(2 * time.Second))
	s.End(t1.Add(3 * time.Second)) // once is enough
	if b := u.Backlog(); b != 0 {
		t.Errorf("backlog after the send ended = %d, want 0", b)
	}
}

// Bytes of Add and Sends share the link: each counts its share of the
// busy time.
func TestMeterSharesTheLinkBetweenAddAndSends(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	u := Meter{now: c.now}
	const rate = 2 << 20
	// A Send and Add's bytes share the link equally, each sending its
	// bytes over the same seconds.
	s := u.Start(4<<20, c.t)
	u.Add(4 << 20)
	for range 4 {
		c.t = c.t.Add(time.Second)
		u.Sent(1<<20, c.t)
		u.Add(-1 << 20)
		s.Sent(1<<20, c.t)
	}
	s.End(c.t)
	if r := u.Rate(); r < 0.95*rate || r > 1.05*rate {
		t.Errorf("rate = %.0f bytes/s, want %.0f", r, float64(rate))
	}
	if b := u.Backlog(); b != 0 {
		t.Errorf("backlog = %d, want 0", b)
	}
}
