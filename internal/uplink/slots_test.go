package uplink

import (
	"context"
	"errors"
	"testing"

	"github.com/shoal-dev/shoal/internal/eventually"
)

func always(int64, int) bool { return true }

// taking starts a Take and returns where its answer arrives, once the
// request waits (waiting is how many wait then).
func taking(t *testing.T, q *Slots, ctx context.Context, rank int, admit func(int64, int) bool, waiting int) <-chan error {
	t.Helper()
	got := make(chan error, 1)
	go func() { got <- q.Take(ctx, 1, rank, admit) }()
	eventually.True(t, "the request waiting for a slot", func() bool { return q.Waiting() == waiting })
	return got
}

func TestSlotsGoToTheWaitingRequestOfLowestRankOldestFirst(t *testing.T) {
	q := NewSlots(func() int { return 1 })
	if err := q.Take(context.Background(), 1, 5, always); err != nil {
		t.Fatalf("first request with the slot free: %v", err)
	}
	older := taking(t, q, context.Background(), 3, always, 1)
	rarest := taking(t, q, context.Background(), 1, always, 2)
	newer := taking(t, q, context.Background(), 3, always, 3)
	for _, w := range []struct {
		name string
		got  <-chan error
	}{{"rank 1", rarest}, {"the older rank 3", older}, {"the newer rank 3", newer}} {
		q.Release()
		if err := <-w.got; err != nil {
			t.Fatalf("%s, next in line for the freed slot: %v", w.name, err)
		}
	}
	if n := q.Waiting(); n != 0 {
		t.Fatalf("%d requests still waiting; want 0", n)
	}
}

// A request handed a slot stops counting as waiting as the slot is freed,
// not once its goroutine runs again: counted until then, it made a request
// arriving meanwhile look like a second one waiting, and refused it.
func TestSlotsCountASlotHandedOverAsTakenAtOnce(t *testing.T) {
	q := NewSlots(func() int { return 1 })
	if err := q.Take(context.Background(), 1, 0, always); err != nil {
		t.Fatal(err)
	}
	oneWaits := func(_ int64, waiting int) bool { return waiting <= 1 }
	got := taking(t, q, context.Background(), 0, oneWaits, 1)
	q.Release()
	if w, n := q.Waiting(), q.Taken(); w != 0 || n != 1 {
		t.Fatalf("after the release: %d waiting, %d taken; want 0 waiting and the slot taken by the one that waited", w, n)
	}
	next := taking(t, q, context.Background(), 0, oneWaits, 1)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	q.Release()
	if err := <-next; err != nil {
		t.Fatalf("a request that came as the slot was handed over: %v; want it to wait and get the slot", err)
	}
}

func TestSlotsRefusedRequestTakesTheWaitingPlaceOfALessRareOne(t *testing.T) {
	q := NewSlots(func() int { return 1 })
	if err := q.Take(context.Background(), 1, 0, always); err != nil {
		t.Fatal(err)
	}
	oneWaits := func(_ int64, waiting int) bool { return waiting <= 1 }
	common := taking(t, q, context.Background(), 2, oneWaits, 1)
	if err := q.Take(context.Background(), 1, 2, oneWaits); !errors.Is(err, ErrBusy) {
		t.Fatalf("a request as rare as the one waiting: %v; want ErrBusy", err)
	}
	rare := taking(t, q, context.Background(), 0, oneWaits, 1)
	if err := <-common; !errors.Is(err, ErrBusy) {
		t.Fatalf("the waiting request a rarer one displaced: %v; want ErrBusy", err)
	}
	if err := q.Take(context.Background(), 1, 1, oneWaits); !errors.Is(err, ErrBusy) {
		t.Fatalf("a request less rare than the one waiting: %v; want ErrBusy", err)
	}
	q.Release()
	if err := <-rare; err != nil {
		t.Fatalf("the rare request, waiting for the freed slot: %v", err)
	}
}

func TestSlotsWaitingRequestGivesUpWhenItsContextEnds(t *testing.T) {
	q := NewSlots(func() int { return 1 })
	if err := q.Take(context.Background(), 1, 0, always); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := taking(t, q, ctx, 0, always, 1)
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled while waiting: %v; want context.Canceled", err)
	}
	if n := q.Waiting(); n != 0 {
		t.Fatalf("%d waiting after the cancel; want 0", n)
	}
	q.Release()
	if n := q.Taken(); n != 0 {
		t.Fatalf("%d slots taken after the only holder released; want 0", n)
	}
}

func TestSlotsFollowTheirLimit(t *testing.T) {
	limit := 1
	q := NewSlots(func() int { return limit })
	if err := q.Take(context.Background(), 1, 0, always); err != nil {
		t.Fatal(err)
	}
	a := taking(t, q, context.Background(), 0, always, 1)
	b := taking(t, q, context.Background(), 0, always, 2)
	limit = 3 // e.g. the link measured: more may go out at once
	q.Release()
	for _, got := range []<-chan error{a, b} {
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	}
	if n := q.Taken(); n != 2 {
		t.Fatalf("%d slots taken; want the two that waited", n)
	}
	if err := q.Take(context.Background(), 1, 0, func(int64, int) bool { return false }); err != nil {
		t.Fatalf("a third request under a limit of 3: %v", err)
	}
}
