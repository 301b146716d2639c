// Package fakeclock is a clock for tests that moves only when told to:
// code under test takes a func() time.Time (its Now method), and the test
// advances it past a TTL instead of sleeping through it.
package fakeclock

import (
	"sync"
	"time"
)

// Clock is a settable time. The zero value is not usable; use New.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// Start is where New's clocks begin: a fixed instant, so that failures
// print the same times from run to run.
var Start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// New returns a clock at Start.
func New() *Clock { return &Clock{now: Start} }

// Now returns the clock's time. Pass c.Now where code wants a clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
