// Package uplink estimates how long a host takes to send what it has
// accepted: the bytes accepted and not yet sent, over the rate at which it
// has been sending while it had something to send. Agents and origin
// seeders use it to turn away piece requests that would wait longer than
// the requester lets a piece take, instead of accepting them all and
// letting every transfer crawl past the requesters' timeouts.
package uplink

import (
	"sync"
	"time"
)

// Meter is one host's (or one node's) upload backlog and send rate. The
// zero Meter is ready; it is safe for concurrent use.
//
// The rate is the bytes sent over the time the backlog was not empty. A
// host that reports a piece's bytes only once the whole piece went out
// (the piece data path sends it with one sendfile) was busy all along,
// however long the piece took: the gaps between its reports are not idle
// time. (Taking a gap of a few seconds between reports for idle, as this
// meter did, never measured a slow link, where one 4 MiB piece takes 3.4 s
// at 10 Mbit/s: every request was accepted and pieces crawled past the
// requesters' timeouts.)
type Meter struct {
	mu       sync.Mutex
	backlog  int64   // bytes accepted and not yet sent
	rate     float64 // bytes per second while busy; 0 until measured
	winBytes int64   // bytes sent in the current window
	// busy is the current window's busy time before busyFrom, when the
	// backlog last became non-empty (zero while it is empty).
	busy     time.Duration
	busyFrom time.Time
	// now is Add's clock (tests); nil: time.Now.
	now func() time.Time
}

// window is the busy time one sample of the send rate spans.
const window = 2 * time.Second

// Add changes the backlog by d bytes (accepted: positive; sent or
// withdrawn: negative).
func (m *Meter) Add(d int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	was := m.backlog
	m.backlog += d
	switch {
	case was <= 0 && m.backlog > 0:
		m.busyFrom = m.clock()
	case was > 0 && m.backlog <= 0:
		if t := m.clock(); t.After(m.busyFrom) {
			m.busy += t.Sub(m.busyFrom)
		}
		m.busyFrom = time.Time{}
	}
}

func (m *Meter) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

// Backlog returns the bytes accepted and not yet sent.
func (m *Meter) Backlog() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.backlog
}

// Sent records n bytes handed to a connection at now. It does not change
// the backlog (Add does).
func (m *Meter) Sent(n int64, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.winBytes += n
	busy := m.busy
	if !m.busyFrom.IsZero() && now.After(m.busyFrom) {
		busy += now.Sub(m.busyFrom)
	}
	if busy < window {
		return
	}
	sample := float64(m.winBytes) / busy.Seconds()
	if m.rate == 0 {
		m.rate = sample
	} else {
		m.rate = (m.rate + sample) / 2
	}
	m.winBytes, m.busy = 0, 0
	if !m.busyFrom.IsZero() {
		m.busyFrom = now
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
	rate, backlog := m.rate, m.backlog
	m.mu.Unlock()
	if rate <= 0 || backlog <= 0 {
		return 0
	}
	return time.Duration(float64(backlog+size) / rate * float64(time.Second))
}
