package rendezvous

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// TestScoreIsTheWireFormula: the score is xxhash64(node ‖ 0 ‖ key); every
// binary of a cluster computes owners and trackers with it, so a change
// would move blobs between nodes of different versions.
func TestScoreIsTheWireFormula(t *testing.T) {
	for _, c := range [][2]string{{"node-a", "sha256:1"}, {"", ""}, {"ab", "c"}} {
		want := xxhash.Sum64String(c[0] + "\x00" + c[1])
		if got := Score(c[0], c[1]); got != want {
			t.Errorf("Score(%q, %q) = %x, want xxhash64 of node, 0, key = %x", c[0], c[1], got, want)
		}
	}
	if Score("ab", "c") == Score("a", "bc") {
		t.Error(`Score("ab","c") == Score("a","bc"): the separator does not keep them apart`)
	}
}

func TestRankIsAPermutationIndependentOfInputOrder(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	reversed := slices.Clone(nodes)
	slices.Reverse(reversed)
	for i := range 50 {
		d := fmt.Sprintf("sha256:%064x", i)
		a, b := Rank(d, nodes), Rank(d, reversed)
		if !slices.Equal(a, b) {
			t.Fatalf("Rank(%s) depends on list order: %v vs %v", d, a, b)
		}
		sorted := slices.Sorted(slices.Values(a))
		if !slices.Equal(sorted, slices.Sorted(slices.Values(nodes))) {
			t.Fatalf("Rank(%s) = %v is not a permutation of %v", d, a, nodes)
		}
	}
}

func TestRankSpreadsBlobs(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	first := map[string]int{}
	const n = 3000
	for i := range n {
		first[Rank(fmt.Sprintf("sha256:%064x", i), nodes)[0]]++
	}
	for _, node := range nodes {
		// Expect n/3 = 1000 each; 800 is far outside random variation.
		if first[node] < 800 {
			t.Errorf("node %s is first for %d of %d blobs, want about %d: %v", node, first[node], n, n/3, first)
		}
	}
}

// Removing a node must only move the blobs that ranked it first, and
// they must move to the node they ranked second: that is what lets every
// agent fail over to the same tracker, and a blob's next owner take over.
func TestRankRemovalMovesOnlyItsBlobs(t *testing.T) {
	all := []string{"n1", "n2", "n3", "n4"}
	without := []string{"n1", "n2", "n4"}
	for i := range 500 {
		d := fmt.Sprintf("sha256:%064x", i)
		before, after := Rank(d, all), Rank(d, without)
		want := before[0]
		if want == "n3" {
			want = before[1]
		}
		if after[0] != want {
			t.Fatalf("blob %s: first node %s after removing n3, want %s (ranking before: %v)", d, after[0], want, before)
		}
	}
}

// TestAboveMatchesRank: self is among the n first of the ranking exactly
// when fewer than n others score above it; duplicates and self in the
// list change nothing.
func TestAboveMatchesRank(t *testing.T) {
	others := []string{"a", "b", "c", "d", "a", "self"}
	for k := range 50 {
		key := fmt.Sprintf("k%d", k)
		r := Rank(key, []string{"a", "b", "c", "d", "self"})
		pos := slices.Index(r, "self")
		if got := Above(key, "self", others); got != pos {
			t.Errorf("key %s: Above = %d, but self is at %d in %v", key, got, pos, r)
		}
	}
}
