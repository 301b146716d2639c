package tracker

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	blobA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	blobB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func seeded() *rand.Rand { return rand.New(rand.NewPCG(1, 1)) }

func TestTableAnnounceReturnsOthers(t *testing.T) {
	tab := NewTable(4, Limits{}, seeded)
	now := time.Unix(1000, 0)
	pol := testPolicy()
	if got := tab.announcePeers(blobA, peer("a", "10.0.1.1", false, 0), time.Minute, now, pol); len(got) != 0 {
		t.Fatalf("first announcer got %q, want nobody", ids(got))
	}
	tab.announcePeers(blobA, peer("b", "10.0.1.2", false, 3), time.Minute, now, pol)
	tab.announcePeers(blobB, peer("c", "10.0.1.3", true, 0), time.Minute, now, pol)
	got := tab.announcePeers(blobA, peer("a", "10.0.1.1", false, 1), time.Minute, now, pol)
	if ids(got) != "b" {
		t.Fatalf("re-announce of a for blob A got %q, want only b (not itself, not blob B's peers)", ids(got))
	}
	if got[0].Pieces != 3 || got[0].Addr != "10.0.1.2:7002" {
		t.Fatalf("b handed out as %+v, want its announced pieces and addr", got[0])
	}
	if tab.Len() != 3 || tab.Blobs() != 2 {
		t.Fatalf("Len = %d, Blobs = %d; want 3 entries (re-announce replaces) over 2 blobs", tab.Len(), tab.Blobs())
	}
}

func TestTableCompleteAskerGetsNoPeers(t *testing.T) {
	tab := NewTable(1, Limits{}, seeded)
	now := time.Unix(1000, 0)
	tab.announcePeers(blobA, peer("a", "10.0.1.1", false, 1), time.Minute, now, testPolicy())
	if got := tab.announcePeers(blobA, peer("seed", "10.0.1.2", true, 0), time.Minute, now, testPolicy()); len(got) != 0 {
		t.Fatalf("complete asker got %q, want nothing", ids(got))
	}
	got := tab.announcePeers(blobA, peer("a", "10.0.1.1", false, 1), time.Minute, now, testPolicy())
	if ids(got) != "seed" || !got[0].Complete {
		t.Fatalf("partial peer got %+v, want the complete seed", got)
	}
}

func TestTableExpiry(t *testing.T) {
	tab := NewTable(2, Limits{}, seeded)
	t0 := time.Unix(1000, 0)
	pol := testPolicy()
	tab.announcePeers(blobA, peer("old", "10.0.1.1", true, 0), 30*time.Second, t0, pol)
	tab.announcePeers(blobA, peer("fresh", "10.0.1.2", true, 0), 30*time.Second, t0.Add(20*time.Second), pol)

	// At t0+30s "old" has expired: it must not be handed out, even before a
	// sweep, and the announce drops it.
	got := tab.announcePeers(blobA, peer("asker", "10.0.1.3", false, 0), 30*time.Second, t0.Add(30*time.Second), pol)
	if ids(got) != "fresh" {
		t.Fatalf("at expiry got %q, want only fresh", ids(got))
	}
	if tab.Len() != 2 {
		t.Fatalf("Len = %d after lazy expiry, want 2 (fresh, asker)", tab.Len())
	}

	// A re-announce extends the entry.
	tab.announcePeers(blobA, peer("fresh", "10.0.1.2", true, 0), 30*time.Second, t0.Add(45*time.Second), pol)
	if n := tab.Sweep(t0.Add(60 * time.Second)); n != 1 {
		t.Fatalf("Sweep at t0+60s removed %d, want 1 (asker; fresh was re-announced)", n)
	}
	if peers := tab.Peers(blobA, t0.Add(60*time.Second)); len(peers) != 1 || peers[0].ID != "fresh" {
		t.Fatalf("after sweep Peers = %q, want fresh", ids(peers))
	}
	if n := tab.Sweep(t0.Add(75 * time.Second)); n != 1 {
		t.Fatalf("Sweep at t0+75s removed %d, want 1", n)
	}
	if tab.Len() != 0 || tab.Blobs() != 0 {
		t.Fatalf("after everything expired: Len = %d, Blobs = %d, want 0, 0", tab.Len(), tab.Blobs())
	}
}

func TestTableRemove(t *testing.T) {
	tab := NewTable(2, Limits{}, seeded)
	now := time.Unix(1000, 0)
	tab.announcePeers(blobA, peer("a", "10.0.1.1", true, 0), time.Minute, now, testPolicy())
	tab.announcePeers(blobA, peer("b", "10.0.1.2", true, 0), time.Minute, now, testPolicy())
	tab.Remove(blobA, "a")
	tab.Remove(blobA, "nobody")
	tab.Remove(blobB, "a")
	if peers := tab.Peers(blobA, now); ids(peers) != "b" || tab.Len() != 1 {
		t.Fatalf("after Remove(a): Peers = %q, Len = %d; want b, 1", ids(peers), tab.Len())
	}
	tab.Remove(blobA, "b")
	if tab.Len() != 0 || tab.Blobs() != 0 {
		t.Fatalf("after removing every peer: Len = %d, Blobs = %d, want 0, 0", tab.Len(), tab.Blobs())
	}
}

func TestTableKeepsLocality(t *testing.T) {
	tab := NewTable(1, Limits{}, seeded)
	now := time.Unix(1000, 0)
	p := Peer{ID: "z", Addr: "10.9.0.1:7002", IP: netip.MustParseAddr("10.9.0.1"), Locality: "zone-a", Complete: true}
	tab.announcePeers(blobA, p, time.Minute, now, testPolicy())
	far := Peer{ID: "far", Addr: "10.0.0.1:7002", IP: netip.MustParseAddr("10.0.0.1"), Locality: "zone-b", Complete: true}
	tab.announcePeers(blobA, far, time.Minute, now, testPolicy())
	asker := Peer{ID: "me", Addr: "10.0.0.2:7002", IP: netip.MustParseAddr("10.0.0.2"), Locality: "zone-a"}
	got := tab.announcePeers(blobA, asker, time.Minute, now, testPolicy())
	if ids(got) != "z,far" || got[0].Locality != "zone-a" {
		t.Fatalf("got %+v, want z (same zone label, other subnet) before far", got)
	}
}

// In a swarm larger than the candidate bound, an announce still returns a
// full list, and still includes the origin.
func TestTableLargeSwarmKeepsOrigins(t *testing.T) {
	tab := NewTable(1, Limits{}, seeded)
	now := time.Unix(1000, 0)
	pol := testPolicy()
	for i := range 2000 {
		tab.announcePeers(blobA, Peer{ID: fmt.Sprintf("p%d", i), Addr: "10.1.0.1:1", IP: netip.MustParseAddr("10.1.0.1"), Pieces: i % 7}, time.Minute, now, pol)
	}
	tab.announcePeers(blobA, origin("o1", "10.9.0.1"), time.Minute, now, pol)
	for range 20 {
		got := tab.announcePeers(blobA, peer("me", "10.2.0.1", false, 0), time.Minute, now, pol)
		if len(got) != pol.Limit || got[len(got)-1].ID != "o1" {
			t.Fatalf("got %d peers ending with %q, want %d ending with the origin", len(got), got[len(got)-1].ID, pol.Limit)
		}
	}
}

// Announces, removals and sweeps from many goroutines at once keep the
// entry count consistent with the table's contents (run with -race).
func TestTableConcurrentUse(t *testing.T) {
	tab := NewTable(8, Limits{}, nil)
	now := time.Unix(1000, 0)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 500 {
				d := fmt.Sprintf("sha256:%064x", i%20)
				id := fmt.Sprintf("w%d-p%d", w, i%30)
				switch i % 10 {
				case 9:
					tab.Remove(d, id)
				case 8:
					tab.Sweep(now.Add(time.Duration(i) * time.Millisecond))
				default:
					tab.announcePeers(d, Peer{ID: id, Addr: "10.0.0.1:1", IP: netip.MustParseAddr("10.0.0.1"), Pieces: i}, time.Second, now.Add(time.Duration(i)*time.Millisecond), testPolicy())
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for i := range 20 {
		total += len(tab.Peers(fmt.Sprintf("sha256:%064x", i), time.Time{}))
	}
	if total != tab.Len() {
		t.Fatalf("Len = %d but the table holds %d entries", tab.Len(), total)
	}
	tab.Sweep(now.Add(time.Hour))
	if tab.Len() != 0 || tab.Blobs() != 0 {
		t.Fatalf("after sweeping everything: Len = %d, Blobs = %d", tab.Len(), tab.Blobs())
	}
}

// announcePeers is Announce for tests that only look at the answer.
func (t *Table) announcePeers(digest string, p Peer, ttl time.Duration, now time.Time, pol Policy) []Peer {
	peers, _, _ := t.Announce(digest, p, ttl, now, pol)
	return peers
}

// A full table keeps new entries out: into a known blob the newcomer is
// still answered, a new blob is refused. Re-announces, removals and origins
// (for the per-blob limit) are never kept out.
func TestTableLimits(t *testing.T) {
	now := time.Unix(1000, 0)
	pol := testPolicy()
	type step struct {
		digest      string
		p           Peer
		wantPeers   string
		wantShed    ShedReason
		wantRefused bool
	}
	tests := []struct {
		name   string
		limits Limits
		steps  []step
		// wantIDs are the entries of blob A at the end.
		wantIDs string
	}{
		{"peers per blob", Limits{PeersPerBlob: 2}, []step{
			{blobA, peer("a", "10.0.1.1", false, 1), "", NotShed, false},
			{blobA, peer("b", "10.0.1.2", false, 2), "a", NotShed, false},
			{blobA, peer("c", "10.0.1.3", false, 0), "b,a", ShedBlobFull, false},
			{blobA, peer("a", "10.0.1.1", false, 3), "b", NotShed, false},
			{blobA, origin("o", "10.9.0.1"), "", NotShed, false},
			{blobB, peer("c", "10.0.1.3", false, 0), "", NotShed, false},
		}, "a,b,o"},
		{"blobs", Limits{Blobs: 1}, []step{
			{blobA, peer("a", "10.0.1.1", false, 1), "", NotShed, false},
			{blobB, peer("b", "10.0.1.2", true, 0), "", ShedBlobs, true},
			{blobA, peer("b", "10.0.1.2", false, 0), "a", NotShed, false},
		}, "a,b"},
		{"entries", Limits{Entries: 2}, []step{
			{blobA, peer("a", "10.0.1.1", false, 1), "", NotShed, false},
			{blobB, peer("b", "10.0.1.2", false, 1), "", NotShed, false},
			{blobA, peer("c", "10.0.1.3", false, 0), "a", ShedEntries, false},
			{"sha256:" + strings.Repeat("c", 64), peer("c", "10.0.1.3", false, 0), "", ShedEntries, true},
			{blobA, origin("o", "10.9.0.1"), "", ShedEntries, false},
			{blobA, peer("a", "10.0.1.1", true, 0), "", NotShed, false},
		}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := NewTable(4, tt.limits, seeded)
			for i, st := range tt.steps {
				got, shed, refused := tab.Announce(st.digest, st.p, time.Minute, now, pol)
				if ids(got) != st.wantPeers || shed != st.wantShed || refused != st.wantRefused {
					t.Fatalf("step %d (%s announces %s): peers %q, shed %q, refused %t; want %q, %q, %t",
						i, st.p.ID, st.digest[:9], ids(got), shed, refused, st.wantPeers, st.wantShed, st.wantRefused)
				}
			}
			var got []string
			for _, p := range tab.Peers(blobA, now) {
				got = append(got, p.ID)
			}
			slices.Sort(got)
			if strings.Join(got, ",") != tt.wantIDs {
				t.Fatalf("blob A holds %q, want %q", got, tt.wantIDs)
			}
		})
	}

	// A removal makes room again.
	tab := NewTable(1, Limits{PeersPerBlob: 1}, seeded)
	tab.announcePeers(blobA, peer("a", "10.0.1.1", false, 1), time.Minute, now, pol)
	tab.Remove(blobA, "a")
	if _, shed, _ := tab.Announce(blobA, peer("b", "10.0.1.2", false, 1), time.Minute, now, pol); shed != NotShed || tab.Len() != 1 {
		t.Fatalf("after the only entry left, a newcomer was shed (%q), Len = %d", shed, tab.Len())
	}
}
