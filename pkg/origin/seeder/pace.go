package seeder

import (
	"sync"
	"time"
)

// pacer is the node's record of the pieces it is sending: the bytes
// accepted and not yet sent (whole pieces), and the rate its link sends
// at while busy. takeUploadSlot turns away a request that, at that rate,
// would not be sent within maxUploadWait behind what was accepted; the
// superseeding ledger sizes its window by the rate.
//
// The rate is measured per piece, from when its send starts to when it
// ends, because that is all the piece data path tells: sendfile(2) sends a
// piece whole, and its bytes are known once it ends. A piece's sample is
// its bytes over its send time, times the number of pieces sent beside it
// on average meanwhile (they shared the link): k pieces sharing a link of
// rate R each take k·size/R, and each gives R. A rate measured from byte
// counts between sends instead sees nothing for as long as a piece takes
// (3.4 s for 4 MiB at 10 Mbit/s), counts that as idle, and never measures
// a slow link: every request was accepted and pieces crawled past the
// agents' piece timeouts, to be sent again (docs/benchmarks.md, swarm).
//
// The zero value is ready; it is safe for concurrent use.
type pacer struct {
	mu      sync.Mutex
	backlog int64 // bytes of the pieces accepted and not ended
	active  int   // pieces being sent
	// area is the integral of active over time up to last: the mean
	// concurrency over a piece's send is the area it spans over its
	// duration.
	area float64 // piece-seconds
	last time.Time
	// The current sample: the sum over the pieces ended since the last
	// one of bytes times concurrency, and of their send times.
	weighted float64
	took     time.Duration
	rate     float64 // bytes per second while busy; 0 until measured
}

// paceWindow is how much send time (summed over pieces) one rate sample
// spans; the first is taken from the first piece that ends.
const paceWindow = 2 * time.Second

// send is one piece send recorded by the pacer; end it with pacer.end.
type send struct {
	size  int64
	start time.Time
	area  float64
}

// accept counts size bytes as accepted and its send as starting at now.
func (p *pacer) accept(size int64, now time.Time) send {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance(now)
	p.backlog += size
	p.active++
	return send{size: size, start: now, area: p.area}
}

// end records that s ended at now with sent of its bytes sent.
func (p *pacer) end(s send, sent int64, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance(now)
	p.backlog -= s.size
	p.active--
	took := now.Sub(s.start)
	if took <= 0 || sent <= 0 {
		return
	}
	concurrency := max(1, (p.area-s.area)/took.Seconds())
	p.weighted += float64(sent) * concurrency
	p.took += took
	if p.took < paceWindow && p.rate != 0 {
		return
	}
	sample := p.weighted / p.took.Seconds()
	if p.rate == 0 {
		p.rate = sample
	} else {
		p.rate = (p.rate + sample) / 2
	}
	p.weighted, p.took = 0, 0
}

// advance adds the pieces being sent since the last event to area.
func (p *pacer) advance(now time.Time) {
	if !p.last.IsZero() && now.After(p.last) {
		p.area += float64(p.active) * now.Sub(p.last).Seconds()
	}
	if now.After(p.last) {
		p.last = now
	}
}

// Rate returns the bytes per second measured while sending, 0 until
// known.
func (p *pacer) Rate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate
}

// wait estimates how long a new piece of size bytes would take to be sent
// behind the pieces accepted: 0 while the rate is unknown or nothing is
// being sent (an idle node takes a request whatever it measured last, or
// it would never measure again).
func (p *pacer) wait(size int64) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rate <= 0 || p.backlog <= 0 {
		return 0
	}
	return time.Duration(float64(p.backlog+size) / p.rate * float64(time.Second))
}
