package cluster

import (
	"fmt"
	"slices"
	"testing"
)

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func nodes(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Name: fmt.Sprintf("origin-%d", i), Addr: fmt.Sprintf("10.0.0.%d:7002", i)}
	}
	return ms
}

func TestOwnersCountAndOrderIndependence(t *testing.T) {
	ms := nodes(5)
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	for _, tc := range []struct {
		r, want int
	}{{0, 5}, {-1, 5}, {1, 1}, {2, 2}, {5, 5}, {9, 5}} {
		got := Owners("sha256:abc", ms, tc.r)
		if len(got) != tc.want {
			t.Errorf("Owners(r=%d) returned %d members, want %d", tc.r, len(got), tc.want)
		}
		if other := Owners("sha256:abc", rev, tc.r); !slices.Equal(got, other) {
			t.Errorf("Owners(r=%d) depends on member order: %v vs %v", tc.r, names(got), names(other))
		}
	}
	if got := Owners("sha256:abc", nil, 2); len(got) != 0 {
		t.Errorf("Owners with no members = %v, want none", got)
	}
}

func TestOwnersStableAndPrefix(t *testing.T) {
	ms := nodes(6)
	for i := range 100 {
		d := fmt.Sprintf("sha256:%064x", i)
		all := Owners(d, ms, 0)
		two := Owners(d, ms, 2)
		if !slices.Equal(two, all[:2]) {
			t.Fatalf("%s: the 2 owners %v are not the first 2 of the ranking %v", d, names(two), names(all))
		}
		if again := Owners(d, ms, 2); !slices.Equal(two, again) {
			t.Fatalf("%s: owners changed between calls: %v then %v", d, names(two), names(again))
		}
	}
}

// When a node leaves, a blob it did not own keeps its owners; a blob it
// owned keeps its other owner and gains the next in its ranking.
func TestOwnersMinimalMovementWhenANodeLeaves(t *testing.T) {
	ms := nodes(8)
	gone := ms[3]
	rest := slices.Delete(slices.Clone(ms), 3, 4)
	const r = 2
	moved := 0
	const blobs = 2000
	for i := range blobs {
		d := fmt.Sprintf("sha256:%064x", i)
		before := Owners(d, ms, r)
		after := Owners(d, rest, r)
		if !slices.Contains(before, gone) {
			if !slices.Equal(before, after) {
				t.Fatalf("%s: owners %v moved to %v though %s did not own it", d, names(before), names(after), gone.Name)
			}
			continue
		}
		moved++
		for _, m := range before {
			if m != gone && !slices.Contains(after, m) {
				t.Fatalf("%s: surviving owner %s lost the blob: %v -> %v", d, m.Name, names(before), names(after))
			}
		}
		want := Owners(d, ms, r+1)[r]
		if !slices.Contains(after, want) {
			t.Fatalf("%s: new owner set %v lacks %s, the next in the ranking", d, names(after), want.Name)
		}
	}
	// 8 nodes, 2 owners each: a node owns about a quarter of the blobs.
	if moved < blobs/8 || moved > blobs*3/8 {
		t.Errorf("%d of %d blobs had %s as owner; want about %d (load is uneven)", moved, blobs, gone.Name, blobs/4)
	}
}

func TestOwnersSpreadLoad(t *testing.T) {
	ms := nodes(4)
	count := map[string]int{}
	const blobs = 4000
	for i := range blobs {
		count[Owners(fmt.Sprintf("sha256:%064x", i), ms, 1)[0].Name]++
	}
	for _, m := range ms {
		if c := count[m.Name]; c < blobs/4*8/10 || c > blobs/4*12/10 {
			t.Errorf("%s is first owner of %d of %d blobs, want %d ± 20%%", m.Name, c, blobs, blobs/4)
		}
	}
}
