// Package eventually waits in tests for a condition that another
// goroutine or process makes true: a polling loop with a deadline, written
// once. A test that needs something to have happened waits for it with
// True; it never sleeps a fixed time and then asserts.
//
// The deadline is generous (Timeout) because CI shares two cores among
// many processes: it bounds a test that would otherwise hang, it is not a
// performance assertion.
package eventually

import (
	"fmt"
	"testing"
	"time"
)

// Timeout is how long True waits.
const Timeout = time.Minute

// True polls cond until it reports true, and fails t (Fatal, so call it
// from the test's goroutine) naming what was awaited if it does not within
// Timeout. It polls every few milliseconds at first and backs off to
// 100ms, so a condition met quickly costs little and a slow one does not
// spin.
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Timeout, what, cond)
}

// Within is True with its own deadline, for a test that knows a tighter
// bound is safe (a fake clock advanced, a local in-process event).
func Within(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Wait(timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Wait is the loop without a test: nil once cond reports true, an error
// saying how long it waited otherwise. For helpers that are not on a test's
// goroutine or report failure their own way.
func Wait(timeout time.Duration, cond func() bool) error {
	start := time.Now()
	deadline := start.Add(timeout)
	pause := 2 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("still not true after %s", time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
	return nil
}
