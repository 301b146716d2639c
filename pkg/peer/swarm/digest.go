package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/piecestore"
)

// With chained metainfo (metainfo.Chained, every sha256 blob the origin
// hashed since) the pieces are the check: each is verified as it arrives
// from the blob's SHA-256 state after the previous one, and the last
// against the digest itself, so a blob whose pieces all verify has its
// digest and is not hashed again.
//
// With per-piece metainfo (sha512 blobs, metainfo stored before chained
// hashes) the assembled blob is checked against its digest while it
// downloads, not after: a goroutine reads the blob from the piece store in
// piece order, waiting for each piece as a streaming client does, and
// hashes it. Readers of a downloading blob hold its last byte back until
// the hash has matched (blobReader), so a blob whose pieces all verify
// against a metainfo that does not describe the digest ends every client's
// response broken, never as a complete-looking 200 (docs/design.md).
// Hashing as the pieces arrive keeps the wait at the end to the last few
// pieces rather than a pass over the whole blob.

// startDigestCheck starts the hash of dl's blob, when its metainfo is
// per-piece and VerifyBlobDigest is on; else the blob counts as verified
// once every piece is.
func (dl *download) startDigestCheck() {
	if !dl.s.cfg.VerifyBlobDigest || dl.meta.Scheme == metainfo.Chained {
		dl.hashDone = true
		return
	}
	ctx, cancel := context.WithCancel(dl.s.ctx)
	dl.stopHash = cancel
	dl.s.wg.Add(1)
	go func() {
		defer dl.s.wg.Done()
		dl.hashed <- dl.hashBlob(ctx)
	}()
}

// hashBlob reads the whole blob as its pieces arrive and checks its digest.
func (dl *download) hashBlob(ctx context.Context) error {
	r, err := dl.s.store.Reader(ctx, dl.d, 0)
	if err != nil {
		return fmt.Errorf("checking the digest of %s: %w", dl.d, err)
	}
	defer r.Close()
	v := dl.d.Verifier()
	n, err := io.CopyBuffer(v, r, make([]byte, chunkSize))
	dl.s.metrics.blobHashed.Add(float64(n))
	if err != nil {
		return fmt.Errorf("checking the digest of %s: %w", dl.d, err)
	}
	if !v.Verified() {
		return fmt.Errorf("every piece of %s matched the origin's piece hashes, but the assembled blob does not match its digest: %w", dl.d, piecestore.ErrDigestMismatch)
	}
	return nil
}

// digestChecked applies the digest check's result. A mismatch drops the
// blob, so nobody is served it, and is returned to fail the download.
func (dl *download) digestChecked(err error) error {
	if err == nil {
		dl.hashDone = true
		dl.markVerified()
		return nil
	}
	if errors.Is(err, piecestore.ErrDigestMismatch) {
		dl.s.metrics.digestMismatches.Inc()
		if rerr := dl.s.store.Remove(dl.d); rerr != nil {
			dl.log.Warn("dropping a blob that does not match its digest", "err", rerr)
		}
	}
	return err
}

// awaitDigest waits for the digest check, for a download whose pieces were
// all held when it started (a restart after the last piece).
func (dl *download) awaitDigest() error {
	if dl.hashDone {
		return nil
	}
	select {
	case err := <-dl.hashed:
		return dl.digestChecked(err)
	case <-dl.s.ctx.Done():
		return errors.New("agent shutting down")
	}
}

// markVerified releases the readers' last byte.
func (dl *download) markVerified() {
	if !dl.verifiedClosed {
		dl.verifiedClosed = true
		close(dl.verified)
	}
}
