package eventually

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitReturnsOnceTrue(t *testing.T) {
	var calls atomic.Int32
	if err := Wait(time.Minute, func() bool { return calls.Add(1) == 3 }); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("cond called %d times, want 3 (stop at the first true)", n)
	}
}

func TestWaitGivesUp(t *testing.T) {
	err := Wait(50*time.Millisecond, func() bool { return false })
	if err == nil {
		t.Fatal("Wait of a condition never true returned nil")
	}
}

func TestWithinFailsTheTest(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Within(ft, 20*time.Millisecond, "a thing that never happens", func() bool { return false })
	}()
	<-done
	if ft.msg == "" {
		t.Fatal("Within did not fail the test")
	}
}

// fatalRecorder records Fatalf and ends the goroutine, as testing.T does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = format
	runtime.Goexit()
}
