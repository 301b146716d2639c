package origin

import (
	"sync"
	"sync/atomic"
	"time"
)

// deadlineBuckets hands out channels that close a fixed time from now,
// one channel (and one timer) shared by every waiter whose deadline falls
// in the same slot of a grain: a storage call waits on a channel made at
// most once per grain, not on a timer of its own.
type deadlineBuckets struct {
	after time.Duration // how long from now a channel closes
	grain time.Duration // how much earlier it may close
	start time.Time     // slots count from here (monotonic)

	cur atomic.Pointer[deadlineBucket]
	mu  sync.Mutex // serializes making a bucket
}

type deadlineBucket struct {
	slot int64 // the deadline, in grains since start
	ch   chan struct{}
}

// newDeadlineBuckets returns buckets whose channels close between
// after-after/16 and after from the call that got them.
func newDeadlineBuckets(after time.Duration) *deadlineBuckets {
	return &deadlineBuckets{after: after, grain: max(after/16, time.Nanosecond), start: time.Now()}
}

// expiry returns a channel closed after b.after at the latest, and no
// earlier than a grain before.
func (b *deadlineBuckets) expiry() <-chan struct{} {
	now := time.Since(b.start)
	slot := int64((now + b.after) / b.grain)
	if c := b.cur.Load(); c != nil && c.slot == slot {
		return c.ch
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.cur.Load()
	if c != nil && c.slot == slot {
		return c.ch
	}
	nc := &deadlineBucket{slot: slot, ch: make(chan struct{})}
	time.AfterFunc(time.Duration(slot)*b.grain-now, func() { close(nc.ch) })
	if c == nil || slot > c.slot {
		// A caller that computed its slot just before another one moved
		// the current bucket on gets a bucket of its own.
		b.cur.Store(nc)
	}
	return nc.ch
}
