package gc

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// ErrBeingCollected is returned by CheckReferences when a blob the caller
// just linked is being deleted by GC, or already was. The origin answers
// the request with BLOB_UNKNOWN (MANIFEST_BLOB_UNKNOWN for a manifest) so
// that the client uploads the blob again.
var ErrBeingCollected = errors.New("blob is being garbage collected")

// CheckReferences is the origin's half of the protocol that keeps a push
// from losing a blob to a concurrent sweep. The origin calls it after it
// has written the links of an operation and before it acknowledges it:
//
//   - blob upload or mount: after writing _layers/<digest>/link, with
//     linked = referenced = [digest];
//   - manifest PUT: after writing the revision link and before the tag
//     link, with linked = nil and referenced = the manifest digest, its
//     config, layers and index children.
//
// It fails when a blob has a pending-deletion marker, when its data is
// gone, or when a layer link in linked is gone. GC writes the marker before
// it re-reads the links and removes it only after the data and the
// dangling links are deleted, so either GC's re-read sees the caller's link
// and keeps the blob, or this check sees the marker or the deletion. On
// failure the origin removes the revision link it wrote (a manifest PUT)
// and reports the error; it must not write the tag.
func CheckReferences(ctx context.Context, drv storage.Driver, repo string, linked, referenced []digest.Digest) error {
	for _, d := range linked {
		if _, err := drv.Stat(ctx, layerLinkPath(repo, d)); err != nil {
			if isNotFound(err) {
				return fmt.Errorf("%w: %s link in %s removed", ErrBeingCollected, d, repo)
			}
			return fmt.Errorf("checking link of %s in %s: %w", d, repo, err)
		}
	}
	for _, d := range referenced {
		if _, err := drv.Stat(ctx, pendingPath(d)); err == nil {
			return fmt.Errorf("%w: %s", ErrBeingCollected, d)
		} else if !isNotFound(err) {
			return fmt.Errorf("checking gc marker of %s: %w", d, err)
		}
		if _, err := drv.Stat(ctx, blobDataPath(d)); err != nil {
			if isNotFound(err) {
				return fmt.Errorf("%w: %s data deleted", ErrBeingCollected, d)
			}
			return fmt.Errorf("checking data of %s: %w", d, err)
		}
	}
	return nil
}

func writeMarker(ctx context.Context, drv storage.Driver, d digest.Digest, token uint64) error {
	if err := drv.PutContent(ctx, pendingPath(d), []byte(strconv.FormatUint(token, 10))); err != nil {
		return fmt.Errorf("writing gc marker of %s: %w", d, err)
	}
	return nil
}

func removeMarker(ctx context.Context, drv storage.Driver, d digest.Digest) error {
	if err := drv.Delete(ctx, pendingPath(d)); err != nil && !isNotFound(err) {
		return fmt.Errorf("removing gc marker of %s: %w", d, err)
	}
	return nil
}
