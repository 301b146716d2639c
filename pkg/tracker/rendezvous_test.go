package tracker

import (
	"fmt"
	"slices"
	"testing"
)

func TestRankIsAPermutationIndependentOfInputOrder(t *testing.T) {
	trackers := []string{"t1:7001", "t2:7001", "t3:7001", "t4:7001"}
	reversed := slices.Clone(trackers)
	slices.Reverse(reversed)
	for i := range 50 {
		d := fmt.Sprintf("sha256:%064x", i)
		a, b := Rank(d, trackers), Rank(d, reversed)
		if !slices.Equal(a, b) {
			t.Fatalf("Rank(%s) depends on list order: %v vs %v", d, a, b)
		}
		sorted := slices.Sorted(slices.Values(a))
		if !slices.Equal(sorted, slices.Sorted(slices.Values(trackers))) {
			t.Fatalf("Rank(%s) = %v is not a permutation of %v", d, a, trackers)
		}
	}
}

func TestRankSpreadsBlobs(t *testing.T) {
	trackers := []string{"t1:7001", "t2:7001", "t3:7001"}
	first := map[string]int{}
	const n = 3000
	for i := range n {
		first[Rank(fmt.Sprintf("sha256:%064x", i), trackers)[0]]++
	}
	for _, tr := range trackers {
		// Expect n/3 = 1000 each; 800 is far outside random variation.
		if first[tr] < 800 {
			t.Errorf("tracker %s is first for %d of %d blobs, want about %d: %v", tr, first[tr], n, n/3, first)
		}
	}
}

// Removing a tracker must only move the blobs that ranked it first, and
// they must move to the tracker they ranked second: that is what lets every
// agent fail over to the same tracker.
func TestRankRemovalMovesOnlyItsBlobs(t *testing.T) {
	all := []string{"t1:7001", "t2:7001", "t3:7001", "t4:7001"}
	without := []string{"t1:7001", "t2:7001", "t4:7001"}
	for i := range 500 {
		d := fmt.Sprintf("sha256:%064x", i)
		before, after := Rank(d, all), Rank(d, without)
		want := before[0]
		if want == "t3:7001" {
			want = before[1]
		}
		if after[0] != want {
			t.Fatalf("blob %s: first tracker %s after removing t3, want %s (ranking before: %v)", d, after[0], want, before)
		}
	}
}
