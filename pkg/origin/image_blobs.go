package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// ErrImageUnknown is returned (wrapped) by ImageBlobs for a repository or
// reference that does not name a manifest.
var ErrImageUnknown = errors.New("image unknown")

// ImageBlobs returns the digest of the manifest that ref (a tag or a
// digest) names in repository name, and the blobs a pull of it reads: the
// config and layers of an image manifest, of every platform's manifest for
// an index, each blob once. It serves the admin API's preheat, which warms
// these blobs on their seeders before a rollout.
func (s *Server) ImageBlobs(ctx context.Context, name, ref string) (digest.Digest, []ocispec.Descriptor, error) {
	if err := ociapi.ValidateName(name); err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrImageUnknown, err)
	}
	d, err := s.resolve(ctx, name, ref)
	var ae *ociapi.Error
	if errors.As(err, &ae) && ae.Code == ociapi.CodeManifestUnknown {
		return "", nil, fmt.Errorf("%w: no manifest %s in repository %s", ErrImageUnknown, ref, name)
	}
	if err != nil {
		return "", nil, fmt.Errorf("resolving %s:%s: %w", name, ref, err)
	}
	seen := map[digest.Digest]bool{}
	var blobs []ocispec.Descriptor
	add := func(desc ocispec.Descriptor) {
		if !seen[desc.Digest] {
			seen[desc.Digest] = true
			blobs = append(blobs, desc)
		}
	}
	// An index's entries are manifests of the same repository; nested
	// indexes are followed to this depth, which no real image reaches.
	const maxDepth = 4
	var walk func(md digest.Digest, depth int) error
	walk = func(md digest.Digest, depth int) error {
		c, err := s.manifestContent(ctx, md)
		if err != nil {
			return fmt.Errorf("reading manifest %s of %s: %w", md, name, err)
		}
		var m manifest
		if err := json.Unmarshal(c.body, &m); err != nil {
			return fmt.Errorf("manifest %s of %s is not JSON: %w", md, name, err)
		}
		if isIndexType(c.mediaType) {
			if depth >= maxDepth {
				return fmt.Errorf("manifest %s of %s: indexes nested deeper than %d", md, name, maxDepth)
			}
			for _, child := range m.Manifests {
				if err := walk(child.Digest, depth+1); err != nil {
					return err
				}
			}
			return nil
		}
		if m.Config != nil {
			add(*m.Config)
		}
		for _, l := range m.Layers {
			add(l)
		}
		return nil
	}
	if err := walk(d, 0); err != nil {
		return "", nil, err
	}
	return d, blobs, nil
}
