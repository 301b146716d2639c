package seeder

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// ownerCapabilityTTL is how long the capability a node mints for asking
// another node (an owner) for metainfo lasts: the call's own bound, with
// room for clock skew.
const ownerCapabilityTTL = 5 * askOwnerTimeout

// checkCapability refuses a call that does not carry a valid capability for
// d in its metadata (auth.CapabilityMetadata). It runs before anything
// reads storage or the cache, so an anonymous call can neither make a node
// read a blob nor learn whether it exists.
func (s *Server) checkCapability(ctx context.Context, d digest.Digest, rpc string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	var tok string
	if v := md.Get(auth.CapabilityMetadata); len(v) > 0 {
		tok = v[0]
	}
	if err := s.verifier.VerifyCapability(tok, d); err != nil {
		s.m.capabilityDenied.WithLabelValues(rpc).Inc()
		s.log.Debug("seeder: refused a call without a valid capability", "rpc", rpc, "digest", d, "err", err)
		return status.Errorf(codes.PermissionDenied, "origin seeder: %v; present the capability the origin returns with an authorized blob HEAD in metadata %q",
			err, auth.CapabilityMetadata)
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
	return metadata.AppendToOutgoingContext(ctx, auth.CapabilityMetadata, tok), nil
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
