package tracker

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
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
	tab := NewTable(4, seeded)
	now := time.Unix(1000, 0)
	pol := testPolicy()
	if got := tab.Announce(blobA, peer("a", "10.0.1.1", false, 0), time.Minute, now, pol); len(got) != 0 {
		t.Fatalf("first announcer got %q, want nobody", ids(got))
	}
	tab.Announce(blobA, peer("b", "10.0.1.2", false, 3), time.Minute, now, pol)
	tab.Announce(blobB, peer("c", "10.0.1.3", true, 0), time.Minute, now, pol)
	got := tab.Announce(blobA, peer("a", "10.0.1.1", false, 1), time.Minute, now, pol)
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
	tab := NewTable(1, seeded)
	now := time.Unix(1000, 0)
	tab.Announce(blobA, peer("a", "10.0.1.1", false, 1), time.Minute, now, testPolicy())
	if got := tab.Announce(blobA, peer("seed", "10.0.1.2", true, 0), time.Minute, now, testPolicy()); len(got) != 0 {
		t.Fatalf("complete asker got %q, want nothing", ids(got))
	}
	got := tab.Announce(blobA, peer("a", "10.0.1.1", false, 1), time.Minute, now, testPolicy())
	if ids(got) != "seed" || !got[0].Complete {
		t.Fatalf("partial peer got %+v, want the complete seed", got)
	}
}

func TestTableExpiry(t *testing.T) {
	tab := NewTable(2, seeded)
	t0 := time.Unix(1000, 0)
	pol := testPolicy()
	tab.Announce(blobA, peer("old", "10.0.1.1", true, 0), 30*time.Second, t0, pol)
	tab.Announce(blobA, peer("fresh", "10.0.1.2", true, 0), 30*time.Second, t0.Add(20*time.Second), pol)

	// At t0+30s "old" has expired: it must not be handed out, even before a
	// sweep, and the announce drops it.
	got := tab.Announce(blobA, peer("asker", "10.0.1.3", false, 0), 30*time.Second, t0.Add(30*time.Second), pol)
	if ids(got) != "fresh" {
		t.Fatalf("at expiry got %q, want only fresh", ids(got))
	}
	if tab.Len() != 2 {
		t.Fatalf("Len = %d after lazy expiry, want 2 (fresh, asker)", tab.Len())
	}

	// A re-announce extends the entry.
	tab.Announce(blobA, peer("fresh", "10.0.1.2", true, 0), 30*time.Second, t0.Add(45*time.Second), pol)
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
	tab := NewTable(2, seeded)
	now := time.Unix(1000, 0)
	tab.Announce(blobA, peer("a", "10.0.1.1", true, 0), time.Minute, now, testPolicy())
	tab.Announce(blobA, peer("b", "10.0.1.2", true, 0), time.Minute, now, testPolicy())
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
	tab := NewTable(1, seeded)
	now := time.Unix(1000, 0)
	p := Peer{ID: "z", Addr: "10.9.0.1:7002", IP: netip.MustParseAddr("10.9.0.1"), Locality: "zone-a", Complete: true}
	tab.Announce(blobA, p, time.Minute, now, testPolicy())
	far := Peer{ID: "far", Addr: "10.0.0.1:7002", IP: netip.MustParseAddr("10.0.0.1"), Locality: "zone-b", Complete: true}
	tab.Announce(blobA, far, time.Minute, now, testPolicy())
	asker := Peer{ID: "me", Addr: "10.0.0.2:7002", IP: netip.MustParseAddr("10.0.0.2"), Locality: "zone-a"}
	got := tab.Announce(blobA, asker, time.Minute, now, testPolicy())
	if ids(got) != "z,far" || got[0].Locality != "zone-a" {
		t.Fatalf("got %+v, want z (same zone label, other subnet) before far", got)
	}
}

// In a swarm larger than the candidate bound, an announce still returns a
// full list, and still includes the origin.
func TestTableLargeSwarmKeepsOrigins(t *testing.T) {
	tab := NewTable(1, seeded)
	now := time.Unix(1000, 0)
	pol := testPolicy()
	for i := range 2000 {
		tab.Announce(blobA, Peer{ID: fmt.Sprintf("p%d", i), Addr: "10.1.0.1:1", IP: netip.MustParseAddr("10.1.0.1"), Pieces: i % 7}, time.Minute, now, pol)
	}
	tab.Announce(blobA, origin("o1", "10.9.0.1"), time.Minute, now, pol)
	for range 20 {
		got := tab.Announce(blobA, peer("me", "10.2.0.1", false, 0), time.Minute, now, pol)
		if len(got) != pol.Limit || got[len(got)-1].ID != "o1" {
			t.Fatalf("got %d peers ending with %q, want %d ending with the origin", len(got), got[len(got)-1].ID, pol.Limit)
		}
	}
}

// Announces, removals and sweeps from many goroutines at once keep the
// entry count consistent with the table's contents (run with -race).
func TestTableConcurrentUse(t *testing.T) {
	tab := NewTable(8, nil)
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
					tab.Announce(d, Peer{ID: id, Addr: "10.0.0.1:1", IP: netip.MustParseAddr("10.0.0.1"), Pieces: i}, time.Second, now.Add(time.Duration(i)*time.Millisecond), testPolicy())
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
