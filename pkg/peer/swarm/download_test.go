package swarm

import (
	"errors"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/scheduler"
)

// TestStreamEndingBeforeItsJoinIsHandledIsNotJoined: a stream can end
// between its join being queued (evJoined, posted by the dialer or the
// Exchange handler) and the download's loop handling it. Its close finds no
// download to tell then, so no evLeft follows: the loop must not count the
// peer as joined (a slot of maxPeersPerBlob, and an agent that keeps the
// origin requests deferred, held by a dead stream), and a dialed
// candidate is dialed again.
func TestStreamEndingBeforeItsJoinIsHandledIsNotJoined(t *testing.T) {
	for _, outgoing := range []bool{false, true} {
		name := map[bool]string{false: "incoming", true: "outgoing"}[outgoing]
		t.Run(name, func(t *testing.T) {
			s, _ := newPieceSwarm(t, "")
			_, m := holdPieces(t, s, 4)
			c, _ := runConn(t, s, m, false)
			dl := newDownload(s, c.bs)
			sched, err := scheduler.New(m, metainfo.NewBitfield(m.NumPieces()), s.sched)
			if err != nil {
				t.Fatal(err)
			}
			dl.meta, dl.sched = m, sched
			const addr = "10.0.0.2:7002"
			if outgoing {
				c.outgoing, c.addr = true, addr
				dl.cands[addr] = &candidate{addr: addr, state: candDialing}
				dl.dialing = 1
			}

			// Queued, then the stream ends before the loop gets to it.
			c.close(errors.New("the peer went away"))
			now := time.Now()
			dl.join(now, c)
			for _, ev := range pieceEvents(dl) {
				if err := dl.handle(now, ev); err != nil {
					t.Fatal(err)
				}
			}

			if got := dl.peers[scheduler.PeerID(c.id)]; got == c {
				t.Fatal("a stream that ended before its join was handled is counted as joined, and nothing will ever mark it left")
			}
			if dl.agents != 0 {
				t.Errorf("%d agents joined after the only stream ended; want 0 (crowded defers origin requests)", dl.agents)
			}
			if outgoing {
				cand := dl.cands[addr]
				if cand == nil || cand.state != candIdle || cand.retryAt.IsZero() {
					t.Errorf("the dialed candidate is %+v; want it idle with a retry time, to be dialed again", cand)
				}
				if dl.dialing != 0 {
					t.Errorf("%d dials counted in progress; want 0", dl.dialing)
				}
			}
		})
	}
}
