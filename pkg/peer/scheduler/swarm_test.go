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
// sends the blob about once, however many agents pull it. With the agent's
// origin-egress rules on (origin.go), each agent also runs them as the
// agent's download loop does: only the fetchers ask the origin at once,
// the others defer, and an origin piece taken back past half way is let
// finish.

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
	// The origin-egress rules' state, with rules on (agents only).
	defer_    *OriginDeferral
	takeback  OriginTakeback
	fetcher   bool
	lastPiece time.Duration
	// The upload in service (uploaders) and when it started.
	serving   swarmUpload
	servingAt time.Duration
}

type swarmEvent struct {
	at   time.Duration
	seq  int
	from int
	up   swarmUpload
	tick bool
}

// swarmParams describes one swarm run.
type swarmParams struct {
	agents, pieces int
	pieceTime      time.Duration
	// superseed > 0: the origin answers REASON_BUSY to a request for a
	// piece it started sending less than superseed ago (a seeder policy,
	// modelled here to measure what it adds).
	superseed time.Duration
	// rules turns the agents' origin-egress rules on: fetchers agents ask
	// the origin at once, the others defer for deferral without progress.
	rules    bool
	fetchers int
	deferral time.Duration
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
	originCut    float64       // pieces' worth the origin sent of transfers cut
	last         time.Duration // when the last agent finished
}

// simulateSwarm runs the swarm.
func simulateSwarm(t testing.TB, seed uint64, sp swarmParams) swarmResult {
	t.Helper()
	agents, pieces, pieceTime, superseed := sp.agents, sp.pieces, sp.pieceTime, sp.superseed
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
		n := &swarmNode{id: PeerID(fmt.Sprintf("agent-%d", a)), s: s}
		if sp.rules {
			n.defer_ = NewOriginDeferral(sp.deferral, cfg.PieceTimeout)
		}
		nodes = append(nodes, n)
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
	// Each agent knows the agents it is connected to, as the agent's
	// download knows the joined ones.
	for a := 1; a < len(nodes); a++ {
		var known []PeerID
		for _, b := range neighbours[a] {
			known = append(known, nodes[b].id)
		}
		nodes[a].fetcher = Fetcher(nodes[a].id, "blob", known, sp.fetchers)
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
	// cut are requests whose transfer the downloader cut while in service:
	// their delivery event is void and the uploader was freed at once.
	cut := map[int]bool{}
	originCut := 0.0
	var serve func(u int, now time.Duration)
	toOrigin := func(a, piece int, now time.Duration) {
		if sp.rules && !nodes[a].takeback.Request(piece) {
			return // held until the piece let finish arrives
		}
		reqs++
		reqOf[key(a, 0, piece)] = reqs
		nodes[0].queue = append(nodes[0].queue, swarmUpload{to: a, piece: piece, req: reqs})
		serve(0, now)
	}
	cancelOrigin := func(a, piece int, now time.Duration) {
		req := reqOf[key(a, 0, piece)]
		o := nodes[0]
		inService := o.busy && o.serving.req == req && !cut[req]
		if !sp.rules {
			cancelled[req] = true
			return
		}
		received := int64(0)
		if inService {
			received = int64((now - o.servingAt) * 1000 / pieceTime)
		}
		switch nodes[a].takeback.Cancel(piece, inService, received, 1000) {
		case CancelFinish:
		case CancelCut:
			cancelled[req] = true
			if inService {
				cut[req] = true
				originCut += float64(now-o.servingAt) / float64(pieceTime)
				o.busy = false
				serve(0, now)
			}
		}
	}
	serve = func(u int, now time.Duration) {
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
			n.serving, n.servingAt = up, now
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
			if index[c.Peer] == 0 {
				if sp.rules && nodes[a].defer_.Cancel(Request(c)) {
					continue // held: never reached the origin
				}
				cancelOrigin(a, c.Piece, now)
				continue
			}
			cancelled[reqOf[key(a, index[c.Peer], c.Piece)]] = true
		}
		for _, r := range acts.Requests {
			u := index[r.Peer]
			if u == 0 {
				if sp.rules && !nodes[a].defer_.Ask(t0.Add(now), r, true, func() bool { return nodes[a].fetcher }) {
					continue
				}
				toOrigin(a, r.Piece, now)
				continue
			}
			reqs++
			reqOf[key(a, u, r.Piece)] = reqs
			nodes[u].queue = append(nodes[u].queue, swarmUpload{to: a, piece: r.Piece, req: reqs})
			serve(u, now)
		}
	}
	for a := 1; a < len(nodes); a++ {
		act(a, 0)
	}
	allDone := func() bool {
		for _, n := range nodes[1:] {
			if !n.s.Done() {
				return false
			}
		}
		return true
	}
	// Held origin requests need time to pass: a tick every piece time, as
	// the agent's loop ticks.
	if sp.rules {
		seq++
		heap.Push(&q, swarmEvent{at: pieceTime, seq: seq, tick: true})
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
		if e.tick {
			for a := 1; a < len(nodes); a++ {
				n := nodes[a]
				send, busy := n.defer_.Due(t0.Add(now), t0.Add(n.lastPiece), true)
				for _, r := range send {
					toOrigin(a, r.Piece, now)
				}
				for _, r := range busy {
					if err := n.s.Handle(t0.Add(now), RequestRejected{Peer: r.Peer, Piece: r.Piece}); err != nil {
						t.Fatal(err)
					}
				}
				act(a, now)
			}
			if !allDone() {
				seq++
				heap.Push(&q, swarmEvent{at: now + pieceTime, seq: seq, tick: true})
			}
			continue
		}
		if cut[e.up.req] {
			continue // the uploader was freed when the transfer was cut
		}
		up := nodes[e.from]
		up.busy = false
		up.served++
		serve(e.from, now)
		down := nodes[e.up.to]
		if e.from == 0 && sp.rules {
			down.defer_.Answered(t0.Add(now), Request{Peer: "origin", Piece: e.up.piece}, true)
			for _, piece := range down.takeback.Ended(e.up.piece) {
				toOrigin(e.up.to, piece, now)
			}
		}
		if down.s.Have().Has(e.up.piece) {
			continue // a duplicate: wasted, but harmless
		}
		down.lastPiece = now
		if err := down.s.Handle(t0.Add(now), PieceReceived{Peer: up.id, Piece: e.up.piece, OK: true}); err != nil {
			t.Fatal(err)
		}
		act(e.up.to, now)
		for _, b := range neighbours[e.up.to] {
			if sp.rules && !nodes[b].s.Have().Has(e.up.piece) {
				nodes[b].defer_.SwarmProgress(t0.Add(now))
			}
			if err := nodes[b].s.Handle(t0.Add(now), PeerHave{Peer: down.id, Piece: e.up.piece}); err != nil {
				t.Fatal(err)
			}
			act(b, now)
		}
	}
	res := swarmResult{originPieces: nodes[0].served, originCut: originCut}
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
			res := simulateSwarm(t, seed, swarmParams{agents: tc.agents, pieces: pieces, pieceTime: pieceTime, superseed: tc.superseed})
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

// TestSwarmOriginEgressRules: the same swarms with the agents'
// origin-egress rules on (4 fetchers, deferral of 6 piece times, origin
// pieces past half way let finish), over 5 seeds each, without help from
// the seeder: every agent completes, the origin sends no more in any run
// than with the scheduler's policy alone, and less over the five.
func TestSwarmOriginEgressRules(t *testing.T) {
	const pieces = 16
	const pieceTime = 100 * time.Millisecond
	for _, agents := range []int{20, 50} {
		worst, slowest, sum, sumWithout := 0.0, 0.0, 0.0, 0.0
		for seed := uint64(1); seed <= 5; seed++ {
			sp := swarmParams{agents: agents, pieces: pieces, pieceTime: pieceTime}
			without := simulateSwarm(t, seed, sp)
			sp.rules, sp.fetchers, sp.deferral = true, 4, 6*pieceTime
			res := simulateSwarm(t, seed, sp)
			egress := (float64(res.originPieces) + res.originCut) / pieces
			egressWithout := float64(without.originPieces) / pieces
			worst, sum, sumWithout = max(worst, egress), sum+egress, sumWithout+egressWithout
			slowest = max(slowest, float64(res.last)/float64(pieces*pieceTime))
			if egress > egressWithout {
				t.Errorf("%d agents, seed %d: with the origin-egress rules the origin sent %.2f x the layer, without them %.2f x",
					agents, seed, egress, egressWithout)
			}
		}
		if sum >= sumWithout {
			t.Errorf("%d agents: over 5 seeds the origin sent %.2f layers with the origin-egress rules, %.2f without; want less",
				agents, sum, sumWithout)
		}
		t.Logf("%d agents: origin egress <= %.2f x layer with the rules, %.2f layers over 5 seeds (%.2f without); last agent done <= %.1f x one upload of the layer",
			agents, worst, sum, sumWithout, slowest)
	}
}
