package scheduler

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/rendezvous"
)

func TestFetcher(t *testing.T) {
	const blob = "sha256:feed"
	var agents []PeerID
	for i := range 10 {
		agents = append(agents, PeerID(fmt.Sprintf("agent-%d", i)))
	}
	ids := make([]string, len(agents))
	for i, a := range agents {
		ids[i] = string(a)
	}
	ranked := rendezvous.Rank(blob, ids)
	at := func(k int) PeerID { return PeerID(ranked[k]) }
	others := func(self PeerID) []PeerID {
		return slices.DeleteFunc(slices.Clone(agents), func(a PeerID) bool { return a == self })
	}
	cases := []struct {
		name     string
		self     PeerID
		agents   []PeerID
		fetchers int
		want     bool
	}{
		{"alone, it fetches", at(5), nil, 1, true},
		{"no fetchers configured", at(0), others(at(0)), 0, false},
		{"ranked first of ten", at(0), others(at(0)), 1, true},
		{"ranked fourth, four fetchers", at(3), others(at(3)), 4, true},
		{"ranked fifth, four fetchers", at(4), others(at(4)), 4, false},
		{"ranked fifth, five fetchers", at(4), others(at(4)), 5, true},
		{"an agent known twice counts once", at(1), []PeerID{at(0), at(0), at(0)}, 2, true},
		{"itself in the list does not count", at(1), []PeerID{at(0), at(1)}, 2, true},
	}
	for _, tc := range cases {
		if got := Fetcher(tc.self, blob, tc.agents, tc.fetchers); got != tc.want {
			t.Errorf("%s: Fetcher(%s, %d known, %d fetchers) = %v, want %v (ranking %v)",
				tc.name, tc.self, len(tc.agents), tc.fetchers, got, tc.want, ranked)
		}
	}
}

// TestOriginDeferral scripts the life of requests to an origin: each step
// happens at a time (seconds after t0) and checks what is sent, held or
// handed back as busy. The deferral waits 1s without progress; the piece
// timeout is 20s, so a held request is answered busy after 10s.
func TestOriginDeferral(t *testing.T) {
	r := func(i int) Request { return Request{Peer: "origin", Piece: i} }
	always := func() bool { return true }
	never := func() bool { return false }
	type step struct {
		at  float64 // seconds after t0
		do  func(d *OriginDeferral, now time.Time) string
		out string
	}
	ask := func(i int, crowded bool, fetcher func() bool) func(*OriginDeferral, time.Time) string {
		return func(d *OriginDeferral, now time.Time) string {
			if d.Ask(now, r(i), crowded, fetcher) {
				return "sent"
			}
			return "held"
		}
	}
	due := func(lastPiece float64, crowded bool) func(*OriginDeferral, time.Time) string {
		return func(d *OriginDeferral, now time.Time) string {
			send, busy := d.Due(now, t0.Add(time.Duration(lastPiece*float64(time.Second))), crowded)
			return fmt.Sprintf("send %v busy %v", pieces(send), pieces(busy))
		}
	}
	cases := []struct {
		name  string
		wait  time.Duration
		steps []step
	}{
		{"alone, requests go out at once", time.Second, []step{
			{0, ask(0, false, never), "sent"},
		}},
		{"a fetcher asks at once in a crowd", time.Second, []step{
			{0, ask(0, true, always), "sent"},
		}},
		{"deferral off", 0, []step{
			{0, ask(0, true, never), "sent"},
		}},
		{"held while the swarm delivers, sent when it stalls", time.Second, []step{
			{0, ask(0, true, never), "held"},
			{0, ask(1, true, never), "held"},
			{0.5, due(0, true), "send [] busy []"},
			{1.5, due(1, true), "send [] busy []"},
			{2, due(1, true), "send [0 1] busy []"},
			{2, func(d *OriginDeferral, _ time.Time) string { return fmt.Sprint(d.Held()) }, "0"},
		}},
		{"a Have of a missing piece is progress too", time.Second, []step{
			{0, ask(0, true, never), "held"},
			{0.8, func(d *OriginDeferral, now time.Time) string { d.SwarmProgress(now); return "" }, ""},
			{1.5, due(0, true), "send [] busy []"},
			{1.8, due(0, true), "send [0] busy []"},
		}},
		{"sent at once when the crowd is gone", time.Second, []step{
			{0, ask(0, true, never), "held"},
			{0.1, due(0.1, false), "send [0] busy []"},
		}},
		{"held half the piece timeout while the swarm delivers: busy", time.Second, []step{
			{0, ask(0, true, never), "held"},
			{9.9, due(9.5, true), "send [] busy []"},
			{10, due(9.5, true), "send [] busy [0]"},
			{10, func(d *OriginDeferral, _ time.Time) string { return fmt.Sprint(d.Held()) }, "0"},
		}},
		{"a cancelled held request never reached the origin", time.Second, []step{
			{0, ask(0, true, never), "held"},
			{0, ask(1, false, never), "sent"},
			{0.5, func(d *OriginDeferral, _ time.Time) string { return fmt.Sprint(d.Cancel(r(0)), d.Cancel(r(1))) }, "true false"},
			{5, due(0, true), "send [] busy []"},
		}},
		{"a peer that left takes its held requests along", time.Second, []step{
			{0, ask(0, true, never), "held"},
			{0.5, func(d *OriginDeferral, _ time.Time) string { d.PeerLeft("origin"); return fmt.Sprint(d.Held()) }, "0"},
		}},
		{"a slow origin stretches the stall to three piece times", time.Second, []step{
			{0, ask(0, false, never), "sent"},
			{2, func(d *OriginDeferral, now time.Time) string {
				d.Answered(now, r(0), true)
				return fmt.Sprint(d.StallAfter())
			}, "6s"},
			{2, ask(1, false, never), "sent"},
			{6, func(d *OriginDeferral, now time.Time) string {
				d.Answered(now, r(1), true)
				return fmt.Sprint(d.StallAfter())
			}, "7.5s"},
			{6, ask(2, false, never), "sent"},
			{7, func(d *OriginDeferral, now time.Time) string {
				d.Answered(now, r(2), false)
				return fmt.Sprint(d.StallAfter())
			}, "7.5s"},
			{7, ask(3, true, never), "held"},
			{14, due(7, true), "send [] busy []"},
			{14.5, due(7, true), "send [3] busy []"},
		}},
	}
	for _, tc := range cases {
		d := NewOriginDeferral(tc.wait, 20*time.Second)
		for k, st := range tc.steps {
			now := t0.Add(time.Duration(st.at * float64(time.Second)))
			if got := st.do(d, now); got != st.out {
				t.Errorf("%s, step %d at %.1fs: got %q, want %q", tc.name, k, st.at, got, st.out)
			}
		}
	}
}

func pieces(rs []Request) []int {
	out := []int{}
	for _, r := range rs {
		out = append(out, r.Piece)
	}
	return out
}

// TestOriginTakeback scripts one origin connection: requests, take-backs
// at various fill levels of 4 MiB pieces, and pieces ending.
func TestOriginTakeback(t *testing.T) {
	const size = 4 << 20
	type step struct {
		op       string // request, cancel, ended, reset
		piece    int
		received int64 // for cancel; -1: nothing arrived yet
		want     string
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"nothing arrived: cut", []step{
			{"request", 0, 0, "send"},
			{"cancel", 0, -1, "cut"},
		}},
		{"under half: cut", []step{
			{"request", 0, 0, "send"},
			{"cancel", 0, size/2 - 1, "cut"},
		}},
		{"half or more: finish, and hold new requests until it ends", []step{
			{"request", 0, 0, "send"},
			{"cancel", 0, size / 2, "finish"},
			{"request", 1, 0, "hold"},
			{"request", 2, 0, "hold"},
			{"ended", 0, 0, "[1 2]"},
			{"request", 3, 0, "send"},
		}},
		{"a held request taken back never goes out", []step{
			{"cancel", 0, size, "finish"},
			{"request", 1, 0, "hold"},
			{"request", 2, 0, "hold"},
			{"cancel", 1, -1, "held"},
			{"ended", 0, 0, "[2]"},
		}},
		{"held until the last piece let finish ends", []step{
			{"cancel", 0, size, "finish"},
			{"cancel", 1, size * 3 / 4, "finish"},
			{"request", 2, 0, "hold"},
			{"ended", 0, 0, "[]"},
			{"ended", 5, 0, "[]"},
			{"ended", 1, 0, "[2]"},
		}},
		{"reset forgets everything", []step{
			{"cancel", 0, size, "finish"},
			{"request", 1, 0, "hold"},
			{"reset", 0, 0, ""},
			{"request", 2, 0, "send"},
			{"ended", 0, 0, "[]"},
		}},
	}
	for _, tc := range cases {
		var tb OriginTakeback
		for k, st := range tc.steps {
			var got string
			switch st.op {
			case "request":
				got = map[bool]string{true: "send", false: "hold"}[tb.Request(st.piece)]
			case "cancel":
				got = map[TakebackAction]string{CancelHeld: "held", CancelFinish: "finish", CancelCut: "cut"}[tb.Cancel(st.piece, st.received >= 0, max(st.received, 0), size)]
				if cont := tb.Continuing(st.piece); cont != (got == "finish") {
					t.Errorf("%s, step %d: Continuing(%d) = %v after %s", tc.name, k, st.piece, cont, got)
				}
			case "ended":
				got = fmt.Sprint(append([]int{}, tb.Ended(st.piece)...))
			case "reset":
				tb.Reset()
			}
			if got != st.want {
				t.Errorf("%s, step %d (%s %d): got %q, want %q", tc.name, k, st.op, st.piece, got, st.want)
			}
		}
	}
}

func TestDialRetry(t *testing.T) {
	cases := []struct {
		origin   bool
		failures int
		forget   bool
		wait     time.Duration
	}{
		{false, 1, false, time.Second},
		{false, 2, false, 2 * time.Second},
		{false, 3, true, 0},
		{true, 1, false, time.Second},
		{true, 3, false, 4 * time.Second},
		{true, 6, false, 30 * time.Second},
		{true, 60, false, 30 * time.Second},
	}
	for _, tc := range cases {
		forget, wait := DialRetry(tc.origin, tc.failures)
		if forget != tc.forget || wait != tc.wait {
			t.Errorf("DialRetry(origin %v, %d failures) = forget %v, wait %v; want forget %v, wait %v",
				tc.origin, tc.failures, forget, wait, tc.forget, tc.wait)
		}
	}
}

func TestDialOrigins(t *testing.T) {
	const timeout = 5 * time.Second
	cases := []struct {
		name            string
		tracker         bool
		since           time.Duration
		answered        bool
		joined, dialing int
		want            bool
	}{
		{"no tracker: at once", false, 0, false, 0, 0, true},
		{"before the tracker answers", true, time.Second, false, 0, 0, false},
		{"the tracker named no agent", true, time.Second, true, 0, 0, true},
		{"agents it named being dialed", true, time.Second, true, 0, 2, false},
		{"an agent joined, others being dialed", true, time.Second, true, 1, 1, true},
		{"the agents' dials failed", true, time.Second, true, 0, 0, true},
		{"dial timeout passed, tracker silent", true, timeout, false, 0, 0, true},
		{"dial timeout passed, agents still dialing", true, timeout, true, 0, 3, true},
	}
	for _, tc := range cases {
		if got := DialOrigins(tc.tracker, tc.since, timeout, tc.answered, tc.joined, tc.dialing); got != tc.want {
			t.Errorf("%s: DialOrigins = %v, want %v", tc.name, got, tc.want)
		}
	}
}
