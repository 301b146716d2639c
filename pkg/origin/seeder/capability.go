package seeder

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// ownerCapabilityTTL is how long the capability a node mints for asking
// another node (an owner) for metainfo lasts: the call's own bound, with
// room for clock skew.
const ownerCapabilityTTL = 5 * askOwnerTimeout

// checkCapability refuses a call that does not carry a valid capability for
// d in its metadata (auth.CapabilityMetadata), and with mTLS one from a
// tracker's certificate (trackers exchange no pieces, as agents refuse
// them too). It runs before anything reads storage or the cache, so an
// anonymous call can neither make a node read a blob nor learn whether it
// exists.
func (s *Server) checkCapability(ctx context.Context, d digest.Digest, rpc string) error {
	if s.requireIdentity {
		if id, err := auth.AuthenticatePeer(ctx); err == nil && id.Role == auth.RoleTracker {
			s.m.capabilityDenied.WithLabelValues(rpc).Inc()
			return status.Errorf(codes.PermissionDenied, "origin seeder: %s is a tracker certificate: trackers exchange no pieces", id)
		}
	}
	if err := s.verifier.VerifyCapability(auth.CallCapability(ctx), d); err != nil {
		s.m.capabilityDenied.WithLabelValues(rpc).Inc()
		s.log.Debug("seeder: refused a call without a valid capability", "rpc", rpc, "digest", d, "err", err)
		return auth.CapabilityDenied("origin seeder", err)
	}
	return nil
}

// withOwnCapability adds a capability for d, minted with this node's key,
// to a call to another origin node.
func (s *Server) withOwnCapability(ctx context.Context, d digest.Digest) (context.Context, error) {
	tok, err := s.key.IssueCapability(d, ownerCapabilityTTL)
	if err != nil {
		return nil, err
	}
	return auth.WithCapability(ctx, tok), nil
}

// remember signs m with the node's key and caches it: every metainfo this
// node serves (loaded, computed or taken from an owner) goes out signed.
func (s *Server) remember(d digest.Digest, m *metainfo.Metainfo) (*metainfo.Metainfo, error) {
	if err := s.key.SignMetainfo(m); err != nil {
		return nil, fmt.Errorf("metainfo of %s: %w", d, err)
	}
	s.meta.Add(d, m)
	return m, nil
}
