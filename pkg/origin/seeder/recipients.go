package seeder

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/opencontainers/go-digest"
)

// streamHosts records, per blob, the agents whose Exchange streams are open
// from each host (source IP), so that a piece connection without a client
// certificate, whose requests name no agent, counts in the superseeding
// ledger as the agent whose stream it stands beside. Counted apart, one
// agent would be two recipients: a piece it got over its piece connection
// refused to its own stream (a retry after the connection ended), and the
// pieces of a vanished agent not freed when its stream breaks.
//
// An agent dials a seeder's piece port only after that seeder answered its
// stream for the blob, from the same host, so the stream is recorded by
// the time the connection's first request comes. Several agents on one
// host (behind one NAT address, or on loopback in tests) cannot be told
// apart: their piece connections stay recipients of their own. With mTLS
// none of this is needed: a connection's certificate names its agent.
type streamHosts struct {
	mu    sync.Mutex
	peers map[streamHost]map[string]int // peer id -> its open streams
}

type streamHost struct {
	d    digest.Digest
	host string
}

// add records a stream of peer for blob d from host; the returned func
// removes it when the stream ends.
func (h *streamHosts) add(d digest.Digest, host, peer string) (remove func()) {
	k := streamHost{d, host}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.peers == nil {
		h.peers = make(map[streamHost]map[string]int)
	}
	if h.peers[k] == nil {
		h.peers[k] = make(map[string]int)
	}
	h.peers[k][peer]++
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.peers[k][peer]--; h.peers[k][peer] == 0 {
			delete(h.peers[k], peer)
		}
		if len(h.peers[k]) == 0 {
			delete(h.peers, k)
		}
	}
}

// only returns the one agent with streams for d open from host; false when
// there is none, or more than one.
func (h *streamHosts) only(d digest.Digest, host string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ps := h.peers[streamHost{d, host}]
	if len(ps) != 1 {
		return "", false
	}
	for p := range ps {
		return p, true
	}
	return "", false
}

// hostOf is the source IP of a connection's remote address ("" when it has
// none), IPv4-mapped addresses as IPv4.
func hostOf(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		return ap.Addr().Unmap().String()
	}
	return ""
}

// pieceConnPeer is the ledger's name for the agent of a piece connection
// for d from host that showed no certificate: the agent of the streams
// open from that host, if there is one, else a name of the connection's
// own.
func (s *Server) pieceConnPeer(d digest.Digest, host string) string {
	if host != "" {
		if p, ok := s.streamHosts.only(d, host); ok {
			return p
		}
	}
	return fmt.Sprintf("\x00pieces-%d", s.anonStreams.Add(1))
}
