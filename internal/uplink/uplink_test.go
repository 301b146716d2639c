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
