package origin

import (
	"context"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// A push whose one request carries the whole blob and its digest (a PUT
// with ?digest= on a session that has no bytes yet, or a POST with
// ?digest=) is written straight to the blob's path on a store whose writes
// stay invisible until committed (storage.StagedWriter: S3, Azure), and
// committed only once its digest and size check. Otherwise its bytes would
// go to a part in the session's directory and be moved to the blob's path
// after the check, which on an object store is a server-side copy of the
// whole blob. Nothing changes for what is seen: a blob is never visible
// half-written or with bytes of the wrong digest (a wrong body is
// discarded, never committed), the data is in place before its link, and
// a push that fails or is killed leaves nothing at the blob's path
// (docs/storage.md, "Staged pushes"). Chunked uploads, and stores whose
// bytes are visible as they are written (filesystem, HDFS), keep the
// session's parts and the Move.

// stagedWriter returns the store's staged writes for a push of blob d of
// want bytes (-1: unknown), or nil when the push must take the session's
// parts: the store has none, d's algorithm is not available here, the body
// is known to be empty, or the blob is already stored (the push then only
// verifies the body and links the blob, and writes nothing over it).
func (s *Server) stagedWriter(ctx context.Context, d digest.Digest, want int64) (storage.StagedWriter, error) {
	if want == 0 || !d.Algorithm().Available() {
		return nil, nil
	}
	var sw storage.StagedWriter
	if g, ok := s.driver.(*guardedDriver); ok {
		inner, ok := storage.StagedWriterOf(g.Driver)
		if !ok {
			return nil, nil
		}
		sw = guardedStaged{g: g, sw: inner}
	} else if sw, ok = storage.StagedWriterOf(s.driver); !ok {
		return nil, nil
	}
	if _, err := s.blobSize(ctx, d); err == nil {
		return nil, nil
	} else if !isNotFound(err) {
		return nil, err
	}
	return sw, nil
}

// putStaged stores body, the whole of blob want, through sw, and makes it
// the blob want of repository name: upload id's session (sess, nil for a
// monolithic POST, whose directory has only its start time) is where a writer that
// never ends keeps what its store needs to discard it (the stage). want's
// length is size, or -1 when unknown. On any error nothing is visible at
// the blob's path and the session is as it was.
func (s *Server) putStaged(ctx context.Context, sw storage.StagedWriter, sess *uploadSession, name, id string, body io.Reader, size int64, want digest.Digest) error {
	stage := uploadPath(name, id)
	fw, err := sw.StagedWriter(ctx, blobDataPath(want), stage)
	if err != nil {
		return fmt.Errorf("upload %s: opening the blob's staged write: %w", id, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = fw.Cancel(context.WithoutCancel(ctx))
		}
	}()
	if limit, pattern := s.blobSizeLimit(name); limit >= 0 {
		body = &sizeCap{r: body, left: limit, refuse: func() error {
			return s.errBlobTooLarge(name, limit, pattern, "went past it")
		}}
	}
	src := &readErrRecorder{r: body}
	pieces := metainfo.NewGrowingHasher()
	if metainfo.SchemeFor(want, metainfo.DefaultPieceLength) != metainfo.Chained {
		if pieces, err = metainfo.NewHasher(metainfo.PerPiece, metainfo.DefaultPieceLength); err != nil {
			return err
		}
	}
	h := chainedHash(pieces)
	if h == nil {
		h = want.Algorithm().Hash()
	}
	hw, side := chunkHashers(h, pieces)
	n, err := copyChunk(fw, hw, side, src)
	switch {
	case err != nil:
		return s.chunkFailure(ctx, id, err, src.err, n, 0)
	case size >= 0 && n != size:
		return errChunkLength(n, size)
	}
	if got := digest.NewDigest(want.Algorithm(), h); got != want {
		return errDigestMismatch(n, got, want)
	}
	if sess != nil {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		if sess.canceled {
			return ociapi.UploadUnknown(id)
		}
	}
	if err := fw.Commit(ctx); err != nil {
		// Another push may have stored the blob meanwhile, in a form the
		// store would not commit over (an Azure append blob, which a
		// Move makes): what is at a blob's path was verified too.
		if stored, serr := s.blobSize(ctx, want); serr != nil || stored != n {
			return fmt.Errorf("upload %s: storing the blob: %w", id, err)
		}
	}
	committed = true
	s.metrics.bytesIn.WithLabelValues(ociapi.Upload).Add(float64(n))
	st := &uploadState{Size: n}
	if n <= maxHashedUpload(pieces) {
		if st.Pieces, err = pieces.MarshalBinary(); err != nil {
			return err
		}
	}
	return s.completeUpload(ctx, name, id, st, want)
}

// guardedStaged opens staged writers under the origin's storage guard, as
// Writer opens the others.
type guardedStaged struct {
	g  *guardedDriver
	sw storage.StagedWriter
}

func (gs guardedStaged) StagedWriter(ctx context.Context, p, stage string) (storage.FileWriter, error) {
	return gs.g.openWriter(ctx, p, func(ctx context.Context) (storage.FileWriter, error) { return gs.sw.StagedWriter(ctx, p, stage) })
}
