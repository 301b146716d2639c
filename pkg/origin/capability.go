package origin

import (
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/auth"
)

// DefaultCapabilityTTL is how long a P2P capability handed out with a blob
// answer stays valid: 30m. Seeders and agents check it when a stream opens
// (GetMetainfo, Exchange), not during one, and a long download of a large
// layer keeps dialing peers it learns of late, with the capability it got
// when the pull started; so it has to outlive the slowest pull. A client
// that loses access can still fetch the blob's pieces for up to this long,
// as long as it stays reachable by the same digest it already had.
const DefaultCapabilityTTL = 30 * time.Minute

// p2pSigner is what SetSigningKey installs.
type p2pSigner struct {
	key *auth.Key
	ttl time.Duration
}

// SetSigningKey makes the origin hand out P2P capabilities signed by k,
// valid for capabilityTTL (DefaultCapabilityTTL when not positive), with
// every successful blob HEAD and GET (header auth.CapabilityHeader), and
// publish k's public half at auth.KeysPath. The requests are authorized
// before the blob handler runs, so a capability goes only to those the
// rules let read the blob. Call it before serving.
func (s *Server) SetSigningKey(k *auth.Key, capabilityTTL time.Duration) {
	if capabilityTTL <= 0 {
		capabilityTTL = DefaultCapabilityTTL
	}
	first := s.p2p == nil
	s.p2p = &p2pSigner{key: k, ttl: capabilityTTL}
	if first {
		s.mux.HandleFunc("GET "+auth.KeysPath, s.serveKeys)
	}
}

// serveKeys publishes the origin's public keys (auth.KeySet): public, so
// without access checks, like any JWKS.
func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "max-age=60")
	if err := writeJSON(w, r, http.StatusOK, auth.NewKeySet(s.p2p.key.Public())); err != nil {
		s.log.Warn("serving the origin's public keys", "err", err)
	}
}

// setCapability adds a capability for d to an authorized blob answer. A
// signing failure is logged and the answer goes without one: the client
// still gets the blob from the registry API, only its agent cannot fetch
// it from peers.
func (s *Server) setCapability(h http.Header, d digest.Digest) {
	if s.p2p == nil {
		return
	}
	tok, err := s.p2p.key.IssueCapability(d, s.p2p.ttl)
	if err != nil {
		s.log.Warn("issuing a P2P capability", "digest", d, "err", err)
		return
	}
	h.Set(auth.CapabilityHeader, tok)
}
