package uplink

import (
	"context"
	"errors"
	"sync"
)

// ErrBusy is Slots.Take's answer to a request that may not wait.
var ErrBusy = errors.New("uplink: busy")

// Slots are a node's upload slots: Limit pieces go out at once, and the
// requests beyond wait for a slot, in turn, if the caller's admission rule
// lets them. A freed slot goes to the waiting request of lowest rank, the
// oldest among equals; a request refused admission takes the place of the
// waiting one of highest rank (the newest among equals) if that rank is
// higher than its own, which is then answered ErrBusy. With every rank 0 it
// is first come, first served. It is safe for concurrent use.
type Slots struct {
	limit func() int

	mu      sync.Mutex
	taken   int
	seq     uint64
	waiting []*slotWaiter
	bytes   int64 // of the waiting requests
}

type slotWaiter struct {
	rank  int
	seq   uint64
	size  int64
	ready chan error // nil: the slot is this request's
}

// NewSlots returns slots of which limit() may be taken at once; limit is
// asked at each Take and Release, so it may change (a node that has
// measured its link may send more at once).
func NewSlots(limit func() int) *Slots { return &Slots{limit: limit} }

// Take waits for a slot for a request of size bytes and the given rank.
// When no slot is free, admit is asked whether the request may wait, given
// the bytes and the number of requests that would then be waiting (this
// one included); it is called with the Slots' lock held, so it must not
// call back into them. It returns nil once the slot is the caller's (free it
// with Release), ErrBusy when the request may not wait or was displaced
// by one of lower rank, and ctx's error when ctx ends first.
func (q *Slots) Take(ctx context.Context, size int64, rank int, admit func(queued int64, waiting int) bool) error {
	q.mu.Lock()
	if q.taken < q.limit() && len(q.waiting) == 0 {
		q.taken++
		q.mu.Unlock()
		return nil
	}
	if !admit(q.bytes+size, len(q.waiting)+1) {
		w := q.highest()
		if w < 0 || q.waiting[w].rank <= rank {
			q.mu.Unlock()
			return ErrBusy
		}
		q.remove(w).ready <- ErrBusy
	}
	q.seq++
	me := &slotWaiter{rank: rank, seq: q.seq, size: size, ready: make(chan error, 1)}
	q.waiting = append(q.waiting, me)
	q.bytes += size
	q.mu.Unlock()
	select {
	case err := <-me.ready:
		return err
	case <-ctx.Done():
	}
	q.mu.Lock()
	for i, w := range q.waiting {
		if w == me {
			q.remove(i)
			q.mu.Unlock()
			return ctx.Err()
		}
	}
	q.mu.Unlock()
	// Answered as ctx ended: a slot given is given back.
	if err := <-me.ready; err == nil {
		q.Release()
	}
	return ctx.Err()
}

// Release frees a slot Take gave: the waiting requests of lowest rank take
// the slots free.
func (q *Slots) Release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.taken--
	for len(q.waiting) > 0 && q.taken < q.limit() {
		best := 0
		for i, w := range q.waiting {
			if w.before(q.waiting[best]) {
				best = i
			}
		}
		q.taken++
		q.remove(best).ready <- nil
	}
}

// highest is the index of the waiting request that comes last in turn (of
// highest rank, the newest among equals); -1 when none waits.
func (q *Slots) highest() int {
	worst := -1
	for i, w := range q.waiting {
		if worst < 0 || q.waiting[worst].before(w) {
			worst = i
		}
	}
	return worst
}

// before reports whether w takes a freed slot before o: lower rank, or the
// same rank and older.
func (w *slotWaiter) before(o *slotWaiter) bool {
	return w.rank < o.rank || w.rank == o.rank && w.seq < o.seq
}

func (q *Slots) remove(i int) *slotWaiter {
	w := q.waiting[i]
	q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
	q.bytes -= w.size
	return w
}

// Taken is how many slots are taken.
func (q *Slots) Taken() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.taken
}

// Waiting is how many requests wait for a slot.
func (q *Slots) Waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting)
}
