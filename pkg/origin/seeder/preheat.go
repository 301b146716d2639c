package seeder

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Warmed is what preheating a blob did on one of its owners.
type Warmed struct {
	// Owner is the owner's cluster name; empty without a cluster.
	Owner string
	// Err is why the owner could not load the blob or its metainfo.
	Err error
}

// Preheat has every owner of d read the blob from storage into its cache,
// hold its metainfo (computed once, by the first owner that needs it) and
// announce itself to the trackers, as a first GetMetainfo from an agent
// would: before a rollout, so that the first swarm is not bound by storage
// reads. This node warms its own share and asks the other owners through
// their seeders. It returns one result per owner, best first; err is set
// only when the blob itself is unusable (not in storage).
func (s *Server) Preheat(ctx context.Context, d digest.Digest) ([]Warmed, error) {
	if _, err := s.blobSize(ctx, d); err != nil {
		return nil, fmt.Errorf("preheating %s: %w", d, err)
	}
	if s.members == nil {
		return []Warmed{{Err: s.warm(ctx, d)}}, nil
	}
	self := s.members.Self().Name
	var out []Warmed
	for _, o := range s.owners(d) {
		w := Warmed{Owner: o.Name}
		switch {
		case o.Name == self:
			w.Err = s.warm(ctx, d)
		case o.Addr == "":
			w.Err = fmt.Errorf("owner %s runs no seeder", o.Name)
		default:
			// The owner answers as to an agent: it loads the metainfo,
			// reads the blob into its cache and announces it.
			_, w.Err = s.askOwner(ctx, o.Addr, d)
		}
		out = append(out, w)
	}
	return out, nil
}

// warm loads or computes d's metainfo here, starts reading the blob into
// the cache and announces it, when this node owns it.
func (s *Server) warm(ctx context.Context, d digest.Digest) error {
	m, err := s.metainfo(ctx, d, false)
	if err != nil {
		return err
	}
	if s.owns(d) {
		s.prefetch(d, m.Size)
		s.track(d)
	}
	return nil
}
