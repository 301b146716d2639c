package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// ErrLeaseHeld is returned by Acquire when another node holds a live lease,
// and ErrLeaseLost by Check and Renew when this node no longer holds it.
var (
	ErrLeaseHeld = errors.New("gc lease held by another node")
	ErrLeaseLost = errors.New("gc lease lost")
)

// LeaseRecord is the content of the lease file.
type LeaseRecord struct {
	Holder string `json:"holder"`
	// Token increases by one on every acquisition, so a holder can tell
	// its own lease from a later one even with the same holder id.
	Token   uint64    `json:"token"`
	Expires time.Time `json:"expires"`
}

// Lease is a node's claim to be the only one running GC, kept in storage at
// /shoal/v1/gc/lease.
//
// Storage drivers offer no compare-and-swap, so acquisition writes the
// record, waits Settle, and reads it back: a competitor that read the old
// record before our write writes within Settle of its read, so after Settle
// at most one of the two still finds its own record. The holder re-reads the
// record before every batch of deletions (Check) and stops when it changed
// or is about to expire, so a node that was paused past its expiry does not
// delete after another node took over. Both rest on clocks agreeing within
// a small fraction of TTL and storage calls finishing within Settle.
type Lease struct {
	drv    storage.Driver
	holder string
	ttl    time.Duration
	settle time.Duration
	now    func() time.Time

	// mu serialises the holder's own calls: the renewal goroutine and the
	// sweep's checks share one Lease.
	mu  sync.Mutex
	rec LeaseRecord
}

// NewLease returns a lease handle for holder (a node id). now may be nil.
func NewLease(drv storage.Driver, holder string, ttl, settle time.Duration, now func() time.Time) *Lease {
	if now == nil {
		now = time.Now
	}
	return &Lease{drv: drv, holder: holder, ttl: ttl, settle: settle, now: now}
}

// Token returns the fencing token of the held lease (0 before Acquire).
func (l *Lease) Token() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec.Token
}

// Holder returns this node's holder id.
func (l *Lease) Holder() string { return l.holder }

// ReadLease returns the current lease record, if any.
func ReadLease(ctx context.Context, drv storage.Driver) (LeaseRecord, bool, error) {
	b, err := drv.GetContent(ctx, leasePath)
	if isNotFound(err) {
		return LeaseRecord{}, false, nil
	}
	if err != nil {
		return LeaseRecord{}, false, fmt.Errorf("reading gc lease: %w", err)
	}
	var rec LeaseRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		// A torn or foreign file must not block GC forever: treat it as
		// expired, and let the next acquisition overwrite it.
		return LeaseRecord{}, true, nil
	}
	return rec, true, nil
}

func (l *Lease) write(ctx context.Context, rec LeaseRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding gc lease: %w", err)
	}
	if err := l.drv.PutContent(ctx, leasePath, b); err != nil {
		return fmt.Errorf("writing gc lease: %w", err)
	}
	return nil
}

// Acquire takes the lease if it is free or expired. It returns ErrLeaseHeld
// when another node holds it or won the race for it.
func (l *Lease) Acquire(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, _, err := ReadLease(ctx, l.drv)
	if err != nil {
		return err
	}
	if cur.Holder != "" && cur.Holder != l.holder && l.now().Before(cur.Expires) {
		return fmt.Errorf("%w: %s until %s", ErrLeaseHeld, cur.Holder, cur.Expires.Format(time.RFC3339))
	}
	want := LeaseRecord{Holder: l.holder, Token: cur.Token + 1, Expires: l.now().Add(l.ttl)}
	if err := l.write(ctx, want); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(l.settle):
	}
	got, _, err := ReadLease(ctx, l.drv)
	if err != nil {
		return err
	}
	if got.Holder != want.Holder || got.Token != want.Token {
		return fmt.Errorf("%w: %s won the race for it", ErrLeaseHeld, got.Holder)
	}
	l.rec = want
	return nil
}

// Check verifies this node still holds the lease with at least margin left.
func (l *Lease) Check(ctx context.Context, margin time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.check(ctx, margin)
}

func (l *Lease) check(ctx context.Context, margin time.Duration) error {
	if l.rec.Token == 0 {
		return fmt.Errorf("%w: never acquired", ErrLeaseLost)
	}
	got, _, err := ReadLease(ctx, l.drv)
	if err != nil {
		return err
	}
	if got.Holder != l.rec.Holder || got.Token != l.rec.Token {
		return fmt.Errorf("%w: now held by %s with token %d", ErrLeaseLost, got.Holder, got.Token)
	}
	if l.now().Add(margin).After(l.rec.Expires) {
		return fmt.Errorf("%w: expires at %s", ErrLeaseLost, l.rec.Expires.Format(time.RFC3339))
	}
	return nil
}

// Renew extends a held lease by TTL from now.
func (l *Lease) Renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(ctx, 0); err != nil {
		return err
	}
	next := l.rec
	next.Expires = l.now().Add(l.ttl)
	if err := l.write(ctx, next); err != nil {
		return err
	}
	l.rec = next
	return l.check(ctx, 0)
}

// Release gives the lease up if this node still holds it, by writing it
// back expired: deleting the file would reset the token.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(ctx, 0); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			return nil
		}
		return err
	}
	rel := l.rec
	rel.Expires = l.now().Add(-time.Second)
	if err := l.write(ctx, rel); err != nil {
		return err
	}
	l.rec = LeaseRecord{}
	return nil
}
