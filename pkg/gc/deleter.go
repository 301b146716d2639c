package gc

import (
	"context"
	"errors"
	"fmt"
	"path"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// ErrTagMoved is returned by Deleter.DeleteTag when the tag no longer points
// at the digest retention planned to delete: a push moved it meanwhile.
var ErrTagMoved = errors.New("tag moved since it was planned for deletion")

// Deleter removes tags and manifests the way the registry API does.
// Retention deletes only through it, so that the origin can apply the same
// side effects as for `DELETE /v2/<name>/manifests/<reference>` (referrers
// index, caches, events). Neither call frees blobs; the sweep does.
type Deleter interface {
	// DeleteTag removes tag from repo if it still points at d, and returns
	// ErrTagMoved otherwise. A tag already gone is not an error.
	DeleteTag(ctx context.Context, repo, tag string, d digest.Digest) error
	// DeleteManifest removes the manifest revision d from repo and every
	// tag that points at it, as a DELETE by digest does. A revision
	// already gone is not an error.
	DeleteManifest(ctx context.Context, repo string, d digest.Digest) error
}

// StorageDeleter deletes tags and manifests directly in registry:2's
// layout, as registry:2's API handlers do. The origin replaces it with its
// own Deleter so that its side effects (the referrers index, caches) follow.
type StorageDeleter struct {
	Driver storage.Driver
}

// DeleteTag implements Deleter.
func (s StorageDeleter) DeleteTag(ctx context.Context, repo, tag string, d digest.Digest) error {
	cur, err := readLink(ctx, s.Driver, tagCurrentLinkPath(repo, tag))
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur != d {
		return fmt.Errorf("%w: %s:%s points at %s, not %s", ErrTagMoved, repo, tag, cur, d)
	}
	if err := s.Driver.Delete(ctx, tagDir(repo, tag)); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting tag %s:%s: %w", repo, tag, err)
	}
	return nil
}

// DeleteManifest implements Deleter.
func (s StorageDeleter) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	if err := s.Driver.Delete(ctx, revisionLinkPath(repo, d)); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting manifest %s@%s: %w", repo, d, err)
	}
	tagsRoot := path.Join(repoPath(repo), "_manifests", "tags")
	tags, err := s.Driver.List(ctx, tagsRoot)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing tags of %s: %w", repo, err)
	}
	for _, t := range tags {
		if err := s.DeleteTag(ctx, repo, path.Base(t), d); err != nil && !errors.Is(err, ErrTagMoved) {
			return fmt.Errorf("untagging manifest %s@%s: %w", repo, d, err)
		}
	}
	return nil
}

// RegistryAPI is the pair of delete operations a registry server exposes
// for its DELETE handlers: an unconditional tag delete, and a manifest
// delete that also untags and may fail when the manifest is unknown.
// pkg/origin's Server has this shape.
type RegistryAPI interface {
	DeleteTag(ctx context.Context, repo, tag string) error
	DeleteManifest(ctx context.Context, repo string, d digest.Digest) error
}

// APIDeleter adapts a RegistryAPI to Deleter: it makes the tag delete
// conditional on the digest and the manifest delete idempotent by reading
// the links first, then calls the server, so that its side effects (the
// referrers index, caches) follow.
type APIDeleter struct {
	Driver storage.Driver
	API    RegistryAPI
}

// DeleteTag implements Deleter.
func (a APIDeleter) DeleteTag(ctx context.Context, repo, tag string, d digest.Digest) error {
	cur, err := readLink(ctx, a.Driver, tagCurrentLinkPath(repo, tag))
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur != d {
		return fmt.Errorf("%w: %s:%s points at %s, not %s", ErrTagMoved, repo, tag, cur, d)
	}
	if err := a.API.DeleteTag(ctx, repo, tag); err != nil {
		return fmt.Errorf("deleting tag %s:%s: %w", repo, tag, err)
	}
	return nil
}

// DeleteManifest implements Deleter.
func (a APIDeleter) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	if _, err := a.Driver.Stat(ctx, revisionLinkPath(repo, d)); isNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("checking manifest %s@%s: %w", repo, d, err)
	}
	if err := a.API.DeleteManifest(ctx, repo, d); err != nil {
		return fmt.Errorf("deleting manifest %s@%s: %w", repo, d, err)
	}
	return nil
}
