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

// TestRankAgreesWhateverTheOrder: every permutation of a list ranks the
// same, best score first, and removing a node moves only the keys it
// ranked first.
func TestRankAgreesWhateverTheOrder(t *testing.T) {
	nodes := []string{"a", "b", "c", "d", "e"}
	moved := 0
	for k := range 200 {
		key := fmt.Sprintf("sha256:%d", k)
		r := Rank(key, nodes)
		rev := slices.Clone(nodes)
		slices.Reverse(rev)
		if got := Rank(key, rev); !slices.Equal(got, r) {
			t.Fatalf("key %s: %v ranks %v, reversed list ranks %v", key, nodes, r, got)
		}
		for i := 1; i < len(r); i++ {
			if Score(r[i-1], key) < Score(r[i], key) {
				t.Fatalf("key %s: %s ranked above %s with a lower score", key, r[i-1], r[i])
			}
		}
		without := Rank(key, slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == "c" }))
		if r[0] != "c" && without[0] != r[0] {
			t.Errorf("key %s: removing c moved the first node from %s to %s", key, r[0], without[0])
		}
		if r[0] == "c" {
			moved++
		}
	}
	if moved == 0 || moved == 200 {
		t.Errorf("c ranked first for %d of 200 keys: the scores do not spread", moved)
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
