package scheduler

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The swarm simulation runs one Scheduler per agent, all pulling one blob
// at the same moment from one origin and from each other, every uploader
// (agent or origin) sending one piece at a time at the same rate. It
// checks the policy the swarm test measures end to end: the origin
// sends the blob about once, however many agents pull it.

type swarmUpload struct {
	to, piece, req int
}

type swarmNode struct {
	id     PeerID
	s      *Scheduler // nil for the origin
	queue  []swarmUpload
	busy   bool
	served int
	done   time.Duration
}

type swarmEvent struct {
	at   time.Duration
	seq  int
	from int
	up   swarmUpload
}

type swarmQueue []swarmEvent

func (q swarmQueue) Len() int { return len(q) }
func (q swarmQueue) Less(i, j int) bool {
	return q[i].at < q[j].at || (q[i].at == q[j].at && q[i].seq < q[j].seq)
}
func (q swarmQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *swarmQueue) Push(x any)   { *q = append(*q, x.(swarmEvent)) }
func (q *swarmQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type swarmResult struct {
	originPieces int           // pieces the origin sent
	last         time.Duration // when the last agent finished
}

// simulateSwarm runs the swarm. With superseed > 0 the origin answers
// REASON_BUSY to a request for a piece it started sending less than
// superseed ago (while it has pieces it never sent): a policy for the
// origin's seeder, modelled here to measure what it adds.
func simulateSwarm(t testing.TB, seed uint64, agents, pieces int, pieceTime, superseed time.Duration) swarmResult {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 3))
	m := layout(pieces)
	// Node 0 is the origin.
	nodes := []*swarmNode{{id: "origin"}}
	for a := range agents {
		cfg := DefaultConfig()
		cfg.Seed = seed*1000 + uint64(a)
		s, err := New(m, nil, cfg)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &swarmNode{id: PeerID(fmt.Sprintf("agent-%d", a)), s: s})
	}
	index := map[PeerID]int{}
	for i, n := range nodes {
		index[n.id] = i
	}
	// Each agent connects to up to MaxPeers others at random; connections
	// are symmetric, as Exchange streams are.
	conns := make([]map[int]bool, len(nodes))
	for i := range conns {
		conns[i] = map[int]bool{}
	}
	maxPeers := DefaultConfig().MaxPeers
	for a := 1; a < len(nodes); a++ {
		for _, b := range rng.Perm(agents) {
			b++
			if b == a || conns[a][b] || len(conns[a]) >= maxPeers/2 || len(conns[b]) >= maxPeers {
				continue
			}
			conns[a][b], conns[b][a] = true, true
		}
	}
	// Iterate neighbours in a fixed order: map order would make runs differ.
	neighbours := make([][]int, len(nodes))
	for a := range conns {
		for b := range conns[a] {
			neighbours[a] = append(neighbours[a], b)
		}
		slices.Sort(neighbours[a])
	}
	for a := 1; a < len(nodes); a++ {
		if err := nodes[a].s.Handle(t0, PeerJoined{Peer: "origin", Origin: true}); err != nil {
			t.Fatal(err)
		}
		for _, b := range neighbours[a] {
			if err := nodes[a].s.Handle(t0, PeerJoined{Peer: nodes[b].id}); err != nil {
				t.Fatal(err)
			}
		}
	}

	var q swarmQueue
	seq, reqs := 0, 0
	cancelled := map[int]bool{}
	// The latest request number of (downloader, uploader, piece).
	reqOf := map[[2]int]int{}
	key := func(down, up, piece int) [2]int { return [2]int{down*len(nodes) + up, piece} }
	sentAt := map[int]time.Duration{}
	var rejects []swarmUpload
	serve := func(u int, now time.Duration) {
		n := nodes[u]
		for !n.busy && len(n.queue) > 0 {
			up := n.queue[0]
			n.queue = n.queue[1:]
			if cancelled[up.req] {
				continue
			}
			if u == 0 && superseed > 0 {
				if at, ok := sentAt[up.piece]; ok && now-at < superseed {
					rejects = append(rejects, up)
					continue
				}
				sentAt[up.piece] = now
			}
			n.busy = true
			seq++
			heap.Push(&q, swarmEvent{at: now + pieceTime, seq: seq, from: u, up: up})
		}
	}
	act := func(a int, now time.Duration) {
		acts := nodes[a].s.Next(t0.Add(now))
		if acts.Done && nodes[a].done == 0 {
			nodes[a].done = now
		}
		for _, c := range acts.Cancels {
			cancelled[reqOf[key(a, index[c.Peer], c.Piece)]] = true
		}
		for _, r := range acts.Requests {
			u := index[r.Peer]
			reqs++
			reqOf[key(a, u, r.Piece)] = reqs
			nodes[u].queue = append(nodes[u].queue, swarmUpload{to: a, piece: r.Piece, req: reqs})
			serve(u, now)
		}
	}
	for a := 1; a < len(nodes); a++ {
		act(a, 0)
	}
	var now time.Duration
	for q.Len() > 0 || len(rejects) > 0 {
		if len(rejects) > 0 {
			rj := rejects
			rejects = nil
			for _, up := range rj {
				if err := nodes[up.to].s.Handle(t0.Add(now), RequestRejected{Peer: "origin", Piece: up.piece}); err != nil {
					t.Fatal(err)
				}
				act(up.to, now)
			}
			if q.Len() == 0 {
				// Everyone is resting from the origin: let time pass.
				now += time.Second
				for a := 1; a < len(nodes); a++ {
					act(a, now)
				}
			}
			continue
		}
		e := heap.Pop(&q).(swarmEvent)
		now = e.at
		up := nodes[e.from]
		up.busy = false
		up.served++
		serve(e.from, now)
		down := nodes[e.up.to]
		if down.s.Have().Has(e.up.piece) {
			continue // a duplicate: wasted, but harmless
		}
		if err := down.s.Handle(t0.Add(now), PieceReceived{Peer: up.id, Piece: e.up.piece, OK: true}); err != nil {
			t.Fatal(err)
		}
		act(e.up.to, now)
		for _, b := range neighbours[e.up.to] {
			if err := nodes[b].s.Handle(t0.Add(now), PeerHave{Peer: down.id, Piece: e.up.piece}); err != nil {
				t.Fatal(err)
			}
			act(b, now)
		}
	}
	res := swarmResult{originPieces: nodes[0].served}
	for _, n := range nodes[1:] {
		if !n.s.Done() {
			t.Fatalf("seed %d: %s stalled with %d of %d pieces", seed, n.id, n.s.Have().Count(), pieces)
		}
		res.last = max(res.last, n.done)
	}
	return res
}

// TestSwarmOriginEgress: 20 and 50 agents pulling a 16-piece layer (64 MiB
// in 4 MiB pieces) at once, over 5 seeds each. With the agents' policy
// alone, the origin sends at most twice the layer to 20 agents (the bound
// of the swarm test); 50 agents are held to their measured figure
// as a regression guard. With the origin declining to resend a piece
// within one layer's upload time (superseeding, a seeder policy modelled
// here), it sends the layer about once (the benchmark's 1.1 x goal).
func TestSwarmOriginEgress(t *testing.T) {
	const pieces = 16
	const pieceTime = 100 * time.Millisecond
	cases := []struct {
		agents    int
		superseed time.Duration
		bound     float64
	}{
		{20, 0, 2.0},
		{50, 0, 2.5},
		{20, pieces * pieceTime, 1.1},
		{50, pieces * pieceTime, 1.15},
	}
	for _, tc := range cases {
		worst, slowest := 0.0, 0.0
		for seed := uint64(1); seed <= 5; seed++ {
			res := simulateSwarm(t, seed, tc.agents, pieces, pieceTime, tc.superseed)
			egress := float64(res.originPieces) / pieces
			worst = max(worst, egress)
			slowest = max(slowest, float64(res.last)/float64(pieces*pieceTime))
			if egress > tc.bound {
				t.Errorf("%d agents, superseed %v, seed %d: origin sent %d pieces, %.2f x the layer; want <= %.2f x",
					tc.agents, tc.superseed, seed, res.originPieces, egress, tc.bound)
			}
		}
		t.Logf("%d agents, superseed %v: origin egress <= %.2f x layer; last agent done <= %.1f x one upload of the layer",
			tc.agents, tc.superseed, worst, slowest)
	}
}
