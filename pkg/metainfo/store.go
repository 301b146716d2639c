package metainfo

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// Prefix is where Shoal keeps metainfo in storage, apart from the registry:2
// layout (docker/registry/v2/...) so that the origin can share storage with
// registry:2 and a registry:2 GC never sees Shoal's files.
const Prefix = "/shoal/v1/metainfo"

// StoragePath returns where the metainfo of blob d is stored:
// /shoal/v1/metainfo/<algorithm>/<hex>.
func StoragePath(d digest.Digest) string {
	return Prefix + "/" + string(d.Algorithm()) + "/" + d.Encoded()
}

// Store writes m in its binary form to StoragePath(m.Digest). Writing is
// idempotent: metainfo is a pure function of the blob, its piece length
// and its scheme, so two origin nodes racing to store it write the same
// thing (during an upgrade, a node before chained hashes may write the
// per-piece form instead: either is right).
func Store(ctx context.Context, d storage.Driver, m *Metainfo) error {
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	if err := d.PutContent(ctx, StoragePath(m.Digest), b); err != nil {
		return fmt.Errorf("storing metainfo for %s: %w", m.Digest, err)
	}
	return nil
}

// Load reads the metainfo of blob dgst. A missing one is reported as a
// wrapped storage.PathNotFoundError so that callers can compute it instead.
func Load(ctx context.Context, d storage.Driver, dgst digest.Digest) (*Metainfo, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("loading metainfo: invalid digest %q: %w", dgst, err)
	}
	b, err := d.GetContent(ctx, StoragePath(dgst))
	if err != nil {
		return nil, fmt.Errorf("loading metainfo for %s: %w", dgst, err)
	}
	var m Metainfo
	if err := m.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("loading metainfo for %s: %w", dgst, err)
	}
	if m.Digest != dgst {
		return nil, fmt.Errorf("loading metainfo for %s: stored file describes %s", dgst, m.Digest)
	}
	return &m, nil
}
