package uplink

import (
	"testing"
	"time"
)

func TestMeterMeasuresTheRateWhileBusy(t *testing.T) {
	var u Meter
	t0 := time.Unix(1000, 0)
	if w, r := u.Wait(4<<20), u.Rate(); w != 0 || r != 0 {
		t.Fatalf("before any send: wait %s, rate %v; want 0, 0 (rate unknown)", w, r)
	}
	// 1 MiB every 0.5 s for 2 s: 2 MiB/s.
	for k := range 5 {
		u.Sent(1<<20, t0.Add(time.Duration(k)*500*time.Millisecond))
	}
	if r := u.Rate(); r < 1.95*(1<<20) || r > 2.05*(1<<20) {
		t.Errorf("rate = %.0f bytes/s, want 2 MiB/s", r)
	}
	u.Add(6 << 20)
	if w := u.Wait(4 << 20); w < 4900*time.Millisecond || w > 5100*time.Millisecond {
		t.Errorf("wait for 4 MiB behind 6 MiB at 2 MiB/s = %s, want 5s", w)
	}
	// A long idle gap is not counted: after it, 1 MiB every 0.25 s is 4 MiB/s
	// and the estimate moves towards it.
	t1 := t0.Add(time.Hour)
	for k := range 9 {
		u.Sent(1<<20, t1.Add(time.Duration(k)*250*time.Millisecond))
	}
	if w := u.Wait(4 << 20); w < 3300*time.Millisecond || w > 3400*time.Millisecond {
		t.Errorf("wait after a faster busy period = %s, want 10 MiB at 3 MiB/s (the mean of 2 and 4) = 3.33s", w)
	}
	u.Add(-6 << 20)
	if b := u.Backlog(); b != 0 {
		t.Errorf("backlog = %d, want 0", b)
	}
}

// An idle host takes a request whatever rate it measured last: its rate is
// measured only while it sends, so refusing would keep a slow estimate
// forever and the host would refuse every request after it.
func TestMeterAdmitsARequestWhenIdle(t *testing.T) {
	var u Meter
	t0 := time.Unix(1000, 0)
	// 256 KiB every 0.5 s for 2 s: 512 KiB/s, too slow for a 4 MiB piece
	// within seconds.
	for k := range 5 {
		u.Sent(256<<10, t0.Add(time.Duration(k)*500*time.Millisecond))
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
