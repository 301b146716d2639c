package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// benchScheduler returns a scheduler for 1024 pieces with 50 peers holding
// half the pieces each, at random, and no reader.
func benchScheduler(b *testing.B) *Scheduler {
	const pieces, peers = 1024, 50
	cfg := DefaultConfig()
	cfg.MaxPeers = peers
	cfg.BusyBackoff = 0
	cfg.Seed = 1
	s, err := New(layout(pieces), nil, cfg)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for p := range peers {
		bf := bits(pieces)
		for i := range pieces {
			if rng.IntN(2) == 0 {
				bf.Set(i)
			}
		}
		if err := s.Handle(t0, PeerJoined{Peer: PeerID(fmt.Sprintf("peer-%d", p)), Bitfield: bf}); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkNext measures a full planning pass: 1024 missing pieces sorted
// and 200 requests (50 peers x 4) assigned. Every request is then rejected
// so that the next pass starts from the same state.
func BenchmarkNext(b *testing.B) {
	s := benchScheduler(b)
	var n int
	for b.Loop() {
		a := s.Next(t0)
		n = len(a.Requests)
		for _, r := range a.Requests {
			_ = s.Handle(t0, RequestRejected{Peer: r.Peer, Piece: r.Piece})
		}
	}
	b.ReportMetric(float64(n), "requests/op")
}

// BenchmarkDownload measures a whole download of 1024 pieces from 50
// peers, every piece arriving at once: the scheduler's cost per blob.
func BenchmarkDownload(b *testing.B) {
	calls := 0
	for b.Loop() {
		b.StopTimer()
		s := benchScheduler(b)
		b.StartTimer()
		now := t0
		for !s.Next(now).Done {
			calls++
			for _, r := range s.InFlight() {
				_ = s.Handle(now, got(r.Peer, r.Piece))
				break
			}
			now = now.Add(time.Millisecond)
		}
	}
	b.ReportMetric(float64(calls)/float64(b.N), "nexts/op")
}
