package gc

import (
	"bytes"
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
// Where the driver offers conditional writes (storage.ConditionalWriter: S3
// If-None-Match/If-Match, Azure ETag conditions, GCS generation
// preconditions, the filesystem's and in-memory driver's locked
// compare-and-write), every write of the record is conditional on the
// version this node read or wrote last: of two nodes that read the same
// record, only one can replace it, and a holder whose lease was taken over
// cannot write its renewal or release over the new holder's record.
//
// Without them, and behind them as a guard against a store that ignores the
// conditions, acquisition writes the record, waits Settle, and reads it
// back: a competitor that read the old record before our write writes within
// Settle of its read, so after Settle at most one of the two still finds its
// own record. That rests on storage calls finishing within Settle and on the
// store returning its latest write to every reader (docs/gc.md).
//
// Either way the holder re-reads the record before every batch of deletions
// (Check) and stops when it changed or is about to expire, so a node that
// was paused past its expiry does not delete after another node took over;
// and expiry rests on clocks agreeing within a small fraction of TTL.
type Lease struct {
	drv storage.Driver
	// cond is drv's conditional writes, nil if it has none.
	cond   storage.ConditionalWriter
	holder string
	ttl    time.Duration
	settle time.Duration
	now    func() time.Time

	// mu serialises the holder's own calls: the renewal goroutine and the
	// sweep's checks share one Lease.
	mu  sync.Mutex
	rec LeaseRecord
	// version is the storage version of rec as this node wrote it, with
	// cond.
	version string
}

// NewLease returns a lease handle for holder (a node id). now may be nil.
func NewLease(drv storage.Driver, holder string, ttl, settle time.Duration, now func() time.Time) *Lease {
	if now == nil {
		now = time.Now
	}
	return &Lease{drv: drv, cond: conditionalOf(drv), holder: holder, ttl: ttl, settle: settle, now: now}
}

// conditionalOf returns drv's conditional writes, or nil. A run hands the
// lease its counting wrapper, which offers only the Driver methods.
func conditionalOf(drv storage.Driver) storage.ConditionalWriter {
	if cd, ok := drv.(*countingDriver); ok {
		drv = cd.Driver
	}
	c, _ := storage.ConditionalWriterOf(drv)
	return c
}

// Conditional reports whether the lease is kept with conditional writes
// rather than by settle-and-read-back.
func (l *Lease) Conditional() bool { return l.cond != nil }

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
	return parseLease(b), true, nil
}

// parseLease decodes a lease record. A torn or foreign file must not block
// GC forever: it reads as an expired lease, which the next acquisition
// replaces.
func parseLease(b []byte) LeaseRecord {
	var rec LeaseRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return LeaseRecord{}
	}
	return rec
}

// readVersioned reads the lease record and its storage version ("" when
// there is none) through the conditional writes.
func (l *Lease) readVersioned(ctx context.Context) (LeaseRecord, string, error) {
	b, version, err := l.cond.GetContentVersion(ctx, leasePath)
	if isNotFound(err) {
		return LeaseRecord{}, "", nil
	}
	if err != nil {
		return LeaseRecord{}, "", fmt.Errorf("reading gc lease: %w", err)
	}
	return parseLease(b), version, nil
}

// writeIf writes rec only if the record's version is still ifVersion ("":
// only if there is none) and returns its new version. A refusal wraps
// storage.ErrConditionFailed, unless the record now holds exactly rec: a
// write that reached the store but whose answer was lost is retried by the
// SDKs, and the retry is refused by the write it repeats.
func (l *Lease) writeIf(ctx context.Context, rec LeaseRecord, ifVersion string) (string, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return "", fmt.Errorf("encoding gc lease: %w", err)
	}
	if cd, ok := l.drv.(*countingDriver); ok {
		cd.write.Add(1)
	}
	version, err := l.cond.PutContentIf(ctx, leasePath, b, ifVersion)
	if err == nil {
		return version, nil
	}
	if !errors.Is(err, storage.ErrConditionFailed) {
		return "", fmt.Errorf("writing gc lease: %w", err)
	}
	got, gotVersion, rerr := l.cond.GetContentVersion(ctx, leasePath)
	if rerr == nil && bytes.Equal(got, b) {
		return gotVersion, nil
	}
	return "", fmt.Errorf("writing gc lease: %w", err)
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
	var (
		cur     LeaseRecord
		version string
		err     error
	)
	if l.cond != nil {
		cur, version, err = l.readVersioned(ctx)
	} else {
		cur, _, err = ReadLease(ctx, l.drv)
	}
	if err != nil {
		return err
	}
	if cur.Holder != "" && cur.Holder != l.holder && l.now().Before(cur.Expires) {
		return fmt.Errorf("%w: %s until %s", ErrLeaseHeld, cur.Holder, cur.Expires.Format(time.RFC3339))
	}
	want := LeaseRecord{Holder: l.holder, Token: cur.Token + 1, Expires: l.now().Add(l.ttl)}
	if l.cond != nil {
		version, err = l.writeIf(ctx, want, version)
		if errors.Is(err, storage.ErrConditionFailed) {
			return fmt.Errorf("%w: another node wrote it first (%w)", ErrLeaseHeld, err)
		}
	} else {
		err = l.write(ctx, want)
	}
	if err != nil {
		return err
	}
	// The read back after Settle is the whole protocol without conditional
	// writes; with them it still guards against a store that accepts the
	// condition headers and ignores them (an S3-compatible store that does
	// not implement them), at the cost of Settle once per run.
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
	l.rec, l.version = want, version
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
	if l.cond != nil {
		version, err := l.writeIf(ctx, next, l.version)
		if errors.Is(err, storage.ErrConditionFailed) {
			return fmt.Errorf("%w: taken over since it was checked (%w)", ErrLeaseLost, err)
		}
		if err != nil {
			return err
		}
		l.rec, l.version = next, version
		return nil
	}
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
	if l.cond != nil {
		_, err := l.writeIf(ctx, rel, l.version)
		if err != nil && !errors.Is(err, storage.ErrConditionFailed) {
			return err
		}
		// Refused: another node took it over since the check; that
		// node's record stays.
		l.rec, l.version = LeaseRecord{}, ""
		return nil
	}
	if err := l.write(ctx, rel); err != nil {
		return err
	}
	l.rec = LeaseRecord{}
	return nil
}
