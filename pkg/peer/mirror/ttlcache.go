package mirror

import (
	"container/list"
	"sync"
	"time"
)

// ttlCache is a map bounded in entries and bytes whose entries expire ttl
// after they were added, on the clock it is given, so tests advance time
// instead of sleeping past a TTL. Every one of the mirror's memories goes
// through it: tag answers, a tag's last answer for while the origin is
// down, the origin's recent yeses, and the manifests kept by digest.
//
// Entries are ordered by their last Add. With a TTL that is also the order
// they expire in, so expired entries are dropped from the back as time
// passes (and the sizes reported stay true without a sweeper goroutine),
// and a full cache gives up the entry closest to expiring. Without a TTL
// (0) entries never expire and a Get also moves its entry to the front:
// a least-recently-used cache.
type ttlCache[V any] struct {
	ttl        time.Duration
	maxEntries int
	maxBytes   int64
	sizeOf     func(V) int64
	now        func() time.Time

	mu    sync.Mutex
	order *list.List // of *ttlEntry[V], front = newest
	items map[string]*list.Element
	bytes int64
}

type ttlEntry[V any] struct {
	key     string
	value   V
	size    int64
	expires time.Time
}

// entryOverhead approximates what an entry costs beyond its key and its
// value's own bytes: the map slot, the list element and the entry.
const entryOverhead = 128

// newTTLCache returns a cache of at most maxEntries entries and maxBytes
// bytes, counting for each entry its key, sizeOf(value) and entryOverhead.
// ttl 0 keeps entries until they are evicted.
func newTTLCache[V any](ttl time.Duration, maxEntries int, maxBytes int64, sizeOf func(V) int64, now func() time.Time) *ttlCache[V] {
	return &ttlCache[V]{
		ttl: ttl, maxEntries: max(maxEntries, 1), maxBytes: maxBytes, sizeOf: sizeOf, now: now,
		order: list.New(), items: make(map[string]*list.Element),
	}
}

// Add stores v under key, replacing what was there. A value larger than
// the whole budget is not stored (and what key held is dropped, so an
// older answer is never served in its place). It returns whether v was
// stored.
func (c *ttlCache[V]) Add(key string, v V) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.expire(now)
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
	cost := int64(len(key)) + c.sizeOf(v) + entryOverhead
	if cost > c.maxBytes {
		return false
	}
	for c.order.Len() >= c.maxEntries || c.bytes+cost > c.maxBytes {
		c.remove(c.order.Back())
	}
	e := &ttlEntry[V]{key: key, value: v, size: cost}
	if c.ttl > 0 {
		e.expires = now.Add(c.ttl)
	}
	c.items[key] = c.order.PushFront(e)
	c.bytes += cost
	return true
}

// Get returns the value under key if it has not expired.
func (c *ttlCache[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(c.now())
	el, ok := c.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	if c.ttl == 0 {
		c.order.MoveToFront(el)
	}
	return el.Value.(*ttlEntry[V]).value, true
}

// Remove drops key.
func (c *ttlCache[V]) Remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
}

// Len returns the entries held, expired ones dropped first.
func (c *ttlCache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(c.now())
	return c.order.Len()
}

// Bytes returns the bytes held (as Add counts them), expired entries
// dropped first.
func (c *ttlCache[V]) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(c.now())
	return c.bytes
}

// expire drops the expired entries, which are at the back.
func (c *ttlCache[V]) expire(now time.Time) {
	if c.ttl == 0 {
		return
	}
	for el := c.order.Back(); el != nil; el = c.order.Back() {
		if now.Before(el.Value.(*ttlEntry[V]).expires) {
			return
		}
		c.remove(el)
	}
}

func (c *ttlCache[V]) remove(el *list.Element) {
	e := c.order.Remove(el).(*ttlEntry[V])
	delete(c.items, e.key)
	c.bytes -= e.size
}
