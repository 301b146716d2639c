// Package uplink estimates how long a host takes to send what it has
// accepted: the bytes accepted and not yet sent, over the rate at which it
// has been sending while it had something to send. Agents and origin
// seeders use it to turn away piece requests that would wait longer than
// the requester lets a piece take, instead of accepting them all and
// letting every transfer crawl past the requesters' timeouts.
package uplink

import (
	"sync"
	"sync/atomic"
	"time"
)

// Meter is one host's (or one node's) upload backlog and send rate. The
// zero Meter is ready; it is safe for concurrent use.
type Meter struct {
	backlog atomic.Int64 // bytes accepted and not yet sent

	mu       sync.Mutex
	rate     float64 // bytes per second while busy; 0 until measured
	winStart time.Time
	winBytes int64
	last     time.Time
}

const (
	// window is the measuring window of the send rate.
	window = 2 * time.Second
	// idle is a gap between sends that ends a busy period; the idle time
	// is not counted against the rate.
	idle = 3 * time.Second
)

// Add changes the backlog by d bytes (accepted: positive; sent or
// withdrawn: negative).
func (m *Meter) Add(d int64) { m.backlog.Add(d) }

// Backlog returns the bytes accepted and not yet sent.
func (m *Meter) Backlog() int64 { return m.backlog.Load() }

// Sent records n bytes handed to a connection at now. It does not change
// the backlog (Add does).
func (m *Meter) Sent(n int64, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.winStart.IsZero() || now.Sub(m.last) > idle {
		// A busy period starts: these bytes were produced before now,
		// so the window counts from here without them.
		m.winStart, m.winBytes, m.last = now, 0, now
		return
	}
	m.winBytes += n
	m.last = now
	if el := now.Sub(m.winStart); el >= window {
		sample := float64(m.winBytes) / el.Seconds()
		if m.rate == 0 {
			m.rate = sample
		} else {
			m.rate = (m.rate + sample) / 2
		}
		m.winStart, m.winBytes = now, 0
	}
}

// Rate returns the bytes per second measured while busy, 0 until known.
func (m *Meter) Rate() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rate
}

// Wait estimates how long a new request of size bytes would take to be
// sent: 0 while the rate is unknown, and 0 while nothing is waiting to be
// sent. An idle host is never turned away: the rate is measured only while
// sending, so a host whose last busy period measured a rate too slow for
// one piece would otherwise refuse every request and never measure again
// (seen in e2e/swarm: every agent holding a layer's last piece answered
// BUSY to each request for minutes while the origin, seeing the piece at
// peers, answered AT_PEERS).
func (m *Meter) Wait(size int64) time.Duration {
	m.mu.Lock()
	rate := m.rate
	m.mu.Unlock()
	backlog := m.backlog.Load()
	if rate <= 0 || backlog <= 0 {
		return 0
	}
	return time.Duration(float64(backlog+size) / rate * float64(time.Second))
}
