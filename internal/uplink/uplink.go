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
// The rate is the bytes sent over the time the host was busy sending. A
// host that reports a piece's bytes only once the whole piece went out
// (the piece data path sends it with one sendfile) was busy all along,
// however long the piece took: the gaps between its reports are not idle
// time. (Taking a gap of a few seconds between reports for idle, as this
// meter did, never measured a slow link, where one 4 MiB piece takes 3.4 s
// at 10 Mbit/s: every request was accepted and pieces crawled past the
// requesters' timeouts.)
//
// Bytes and busy time are counted together, per sender: the busy time is
// shared among the senders busy at once (the link is), and a sender's
// share since its last report counts with the bytes it reports. So a piece
// sent whole beside others brings its bytes and the time it took, divided
// among the pieces sent meanwhile, into one sample. Counting the whole busy
// time as it passes but bytes only when a piece ends puts a piece's time in
// one sample and its bytes in the next: two pieces sent together on a
// slow link and reported at their common end measure half its rate (the
// first brings the whole busy time, the second's bytes go to the next
// sample). Each Send (Start) is a sender; the bytes of Add are one more
// while any are left, so pieces sent whole side by side are better
// counted with Start than with Add and Sent.
type Meter struct {
	mu      sync.Mutex
	backlog int64 // bytes accepted and not yet sent
	loose   int64 // of which accepted with Add, not by a Send
	sends   int   // Sends started and not ended
	// vt is the busy time per sender so far, in seconds: it grows by
	// dt/n over a time dt with n senders, not at all while idle. A
	// sender's share of the busy time between two of its reports is the
	// growth of vt in between; the shares add up to the busy time.
	vt   float64
	vtAt time.Time // when vt was last brought up to date
	// looseFrom is vt when Add's bytes were last counted.
	looseFrom float64
	rate      float64 // bytes per second while busy; 0 until measured
	winBytes  int64   // bytes sent in the current sample
	winBusy   float64 // the busy time they took, in seconds
	// now is Add's clock (tests); nil: time.Now.
	now func() time.Time
}

// window is the busy time one sample of the send rate spans.
const window = 2 * time.Second

// advance brings vt up to now.
func (m *Meter) advance(now time.Time) {
	if !now.After(m.vtAt) {
		return
	}
	if n := m.senders(); n > 0 && !m.vtAt.IsZero() {
		m.vt += now.Sub(m.vtAt).Seconds() / float64(n)
	}
	m.vtAt = now
}

// senders is how many senders share the link now.
func (m *Meter) senders() int {
	n := m.sends
	if m.loose > 0 {
		n++
	}
	return n
}

// Add changes the backlog by d bytes (accepted: positive; sent or
// withdrawn: negative). Bytes added here are sent by one sender, the host
// (report them with Sent); a send known from its start to its end is
// better counted with Start.
func (m *Meter) Add(d int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advance(m.clock())
	was := m.loose
	m.loose += d
	m.backlog += d
	switch {
	case was <= 0 && m.loose > 0:
		m.looseFrom = m.vt
	case was > 0 && m.loose <= 0:
		// The busy time until now counts with the bytes Sent reports.
		m.winBusy += m.vt - m.looseFrom
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

// Sent records n bytes of Add's handed to a connection at now. It does not
// change the backlog (Add does).
func (m *Meter) Sent(n int64, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advance(now)
	if m.loose > 0 {
		m.winBusy += m.vt - m.looseFrom
		m.looseFrom = m.vt
	}
	m.count(n)
}

// count adds n bytes to the current sample, whose busy time has been
// counted, and takes the sample once it spans window.
func (m *Meter) count(n int64) {
	m.winBytes += n
	if m.winBusy < window.Seconds() {
		return
	}
	sample := float64(m.winBytes) / m.winBusy
	if m.rate == 0 {
		m.rate = sample
	} else {
		m.rate = (m.rate + sample) / 2
	}
	m.winBytes, m.winBusy = 0, 0
}

// Send is one send of bytes accepted together (a piece), from Start to
// End. Its methods are not for concurrent use.
type Send struct {
	m     *Meter
	left  int64   // bytes accepted and not reported sent
	from  float64 // the meter's vt at the last report
	ended bool
}

// Start counts size bytes as accepted and their send as starting at now.
// Report what goes out with the Send's Sent, and End it.
func (m *Meter) Start(size int64, now time.Time) *Send {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advance(now)
	m.backlog += size
	m.sends++
	return &Send{m: m, left: size, from: m.vt}
}

// Sent records n of the send's bytes handed to a connection by now (a
// chunk as it goes, or the whole piece at its end), and takes them off the
// backlog.
func (s *Send) Sent(n int64, now time.Time) {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.ended {
		return
	}
	m.advance(now)
	n = min(max(n, 0), s.left)
	s.left -= n
	m.backlog -= n
	m.winBusy += m.vt - s.from
	s.from = m.vt
	m.count(n)
}

// End ends the send at now: what it did not report sent (cut short) leaves
// the backlog. Further calls do nothing.
func (s *Send) End(now time.Time) {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.ended {
		return
	}
	s.ended = true
	m.advance(now)
	m.backlog -= s.left
	s.left = 0
	m.sends--
	// The time since the last report counts with the next sample's bytes.
	m.winBusy += m.vt - s.from
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
