package tracker

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// FuzzAnnounce sends arbitrary announces through the server's validation
// and table, after a well-formed peer of the same blob: none panics, and
// the table keeps its invariants — an announce either is refused with
// INVALID_ARGUMENT or RESOURCE_EXHAUSTED and changes nothing, or records
// (or, STOPPED, removes) exactly one entry under its peer id, with a
// dialable host:port and fields within their limits; repeating it changes
// nothing; an answer holds at most maxPeers entries, each dialable and
// none the asker.
func FuzzAnnounce(f *testing.F) {
	const dg = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	f.Add(dg, "agent-1", "10.0.0.7:7001", "rack-a", []byte{0xff, 0x01}, false, false, int32(1), uint32(0), true)
	f.Add(dg, "agent-2", ":7001", "", []byte(nil), true, false, int32(2), uint32(5), true)
	f.Add(dg, "agent-3", "[::ffff:10.0.0.1]:80", "", []byte{}, false, true, int32(0), uint32(1000), false)
	f.Add(dg, "agent-1", "host.example:65535", "", []byte{1}, false, false, int32(3), uint32(1), true)
	f.Add("sha512:"+string(make([]byte, 128)), "x", "0.0.0.0:1", "", []byte{}, false, false, int32(9), uint32(1), false)
	f.Add("sha256:", "", "nonsense", "", []byte{}, false, false, int32(-1), uint32(0), true)
	f.Fuzz(func(t *testing.T, digest, peerID, addr, locality string, bitfield []byte, complete, isOrigin bool, event int32, numWant uint32, withSource bool) {
		cfg := DefaultConfig()
		now := time.Unix(1_000_000, 0)
		s, err := NewServer(cfg, Options{Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }, Rand: seeded})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if withSource {
			ctx = grpcpeer.NewContext(ctx, &grpcpeer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 9, 8, 7), Port: 40000}})
		}
		resident := &trackerpb.AnnounceRequest{Digest: dg, PeerId: "resident", Addr: "10.0.0.1:7001", Complete: true}
		if _, err := s.Announce(ctx, resident); err != nil {
			t.Fatalf("well-formed announce refused: %v", err)
		}

		req := &trackerpb.AnnounceRequest{
			Digest: digest, PeerId: peerID, Addr: addr, Locality: locality, Bitfield: bitfield,
			Complete: complete, IsOrigin: isOrigin, Event: trackerpb.Event(event), NumWant: numWant,
		}
		before := s.table.Len()
		resp, err := s.Announce(ctx, req)
		if err != nil {
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.ResourceExhausted {
				t.Fatalf("announce refused with %v, want INVALID_ARGUMENT or RESOURCE_EXHAUSTED", err)
			}
			if after := s.table.Len(); after != before {
				t.Fatalf("a refused announce changed the table from %d to %d entries", before, after)
			}
			return
		}
		if resp.GetInterval().AsDuration() != cfg.AnnounceInterval {
			t.Errorf("interval %s, want %s", resp.GetInterval().AsDuration(), cfg.AnnounceInterval)
		}
		if n := len(resp.GetPeers()); n > cfg.MaxPeers {
			t.Errorf("answer holds %d peers, more than maxPeers %d", n, cfg.MaxPeers)
		}
		for _, p := range resp.GetPeers() {
			if p.GetPeerId() == "" || p.GetPeerId() == peerID {
				t.Errorf("answer holds %v: a peer without an id, or the asker itself", p)
			}
			checkDialable(t, p.GetAddr())
		}

		entries := s.table.Len()
		mine := findPeer(s.table.Peers(digest, now), peerID)
		if trackerpb.Event(event) == trackerpb.Event_EVENT_STOPPED {
			if len(mine) != 0 {
				t.Fatalf("after STOPPED the table still holds %d entries for %q", len(mine), peerID)
			}
		} else {
			if len(mine) != 1 {
				t.Fatalf("after an accepted announce the table holds %d entries for %q, want 1", len(mine), peerID)
			}
			p := mine[0]
			checkDialable(t, p.Addr)
			if len(p.ID) > maxPeerIDLen || len(p.Locality) > maxLocalityLen || len(p.Addr) > maxAddrLen+2 {
				t.Errorf("entry past the field limits: id %d, locality %d, addr %d bytes", len(p.ID), len(p.Locality), len(p.Addr))
			}
			if p.Complete != complete || p.Origin != isOrigin {
				t.Errorf("entry complete=%v origin=%v, announced complete=%v is_origin=%v", p.Complete, p.Origin, complete, isOrigin)
			}
			if !p.Complete && (p.Pieces < 0 || p.Pieces > 8*len(bitfield)) {
				t.Errorf("entry counts %d pieces from a %d-byte bitfield", p.Pieces, len(bitfield))
			}
		}
		if _, err := s.Announce(ctx, req); err != nil {
			t.Fatalf("repeating an accepted announce: %v", err)
		}
		if again := s.table.Len(); again != entries {
			t.Fatalf("repeating an announce changed the table from %d to %d entries", entries, again)
		}
	})
}

func findPeer(peers []Peer, id string) []Peer {
	var out []Peer
	for _, p := range peers {
		if p.ID == id {
			out = append(out, p)
		}
	}
	return out
}

// checkDialable fails unless addr is a host:port an agent can dial: a
// non-empty host and a port in 1..65535.
func checkDialable(t *testing.T, addr string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q handed out is not host:port: %v", addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		t.Fatalf("address %q handed out has port %q", addr, port)
	}
	if host == "" {
		t.Fatalf("address %q handed out has no host", addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		t.Fatalf("address %q handed out has an unspecified host", addr)
	}
}
