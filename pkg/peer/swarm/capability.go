package swarm

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// Keys checks what the origin signed, with the origin cluster's public
// keys: the capabilities other agents present, and the metainfo seeders
// serve. *auth.Verifier implements it; the agent wraps one that fetches the
// origin's keys again when it meets a key id it does not know.
type Keys interface {
	VerifyCapability(token string, d digest.Digest) error
	VerifyMetainfo(m *metainfo.Metainfo) error
}

// grant keeps tok as the capability this agent presents for d, if it is
// valid: the mirror passes the one the origin returned with the blob's
// authorization, so the newest valid one wins and outlives the download
// that started with an older one. An invalid one (expired, another key)
// is dropped: the one held may still serve.
func (s *Swarm) grant(d digest.Digest, tok string) {
	if tok == "" || s.capability(d) == tok {
		// Held already, so verified when it was granted: a client's
		// every GET of a cached blob brings the same one, and a
		// signature check costs more than serving a small blob.
		return
	}
	if err := s.keys.VerifyCapability(tok, d); err != nil {
		s.log.Warn("the origin's capability for a blob does not verify: peers will refuse it", "digest", d, "err", err)
		return
	}
	s.mu.Lock()
	s.blobLocked(d).capability = tok
	s.mu.Unlock()
}

// capability returns the capability held for d, empty without one.
func (s *Swarm) capability(d digest.Digest) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bs, ok := s.blobs[d]; ok {
		return bs.capability
	}
	return ""
}

// withCapability adds the capability held for d to an outgoing call.
func (s *Swarm) withCapability(ctx context.Context, d digest.Digest) context.Context {
	if tok := s.capability(d); tok != "" {
		return auth.WithCapability(ctx, tok)
	}
	return ctx
}

// checkCapability refuses a peer that does not present a valid capability
// for d (gRPC metadata auth.CapabilityMetadata). It runs before anything
// about d is looked up, so a peer without one learns nothing of what this
// agent holds.
func (s *Swarm) checkCapability(ctx context.Context, d digest.Digest, rpc string) error {
	if err := s.keys.VerifyCapability(auth.CallCapability(ctx), d); err != nil {
		s.metrics.capabilityDenied.WithLabelValues(rpc).Inc()
		s.log.Debug("refused a peer without a valid capability", "rpc", rpc, "digest", d, "err", err)
		return auth.CapabilityDenied("peer-agent", err)
	}
	return nil
}

// verifyMetainfo checks the origin's signature on metainfo from a seeder.
func (s *Swarm) verifyMetainfo(m *metainfo.Metainfo) error {
	if err := s.keys.VerifyMetainfo(m); err != nil {
		s.metrics.metainfoRejected.Inc()
		return fmt.Errorf("refusing it: %w", err)
	}
	return nil
}
