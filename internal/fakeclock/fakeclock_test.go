package fakeclock

import (
	"testing"
	"time"
)

func TestClockMovesOnlyWhenTold(t *testing.T) {
	c := New()
	if !c.Now().Equal(Start) {
		t.Fatalf("new clock at %v, want %v", c.Now(), Start)
	}
	c.Advance(90 * time.Second)
	if got, want := c.Now(), Start.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("after Advance(90s): %v, want %v", got, want)
	}
	later := Start.Add(time.Hour)
	c.Set(later)
	if !c.Now().Equal(later) {
		t.Errorf("after Set: %v, want %v", c.Now(), later)
	}
}
