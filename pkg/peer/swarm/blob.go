package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/peer/piecestore"
)

// Blob is an open blob: complete in the cache, or downloading.
type Blob struct {
	s       *Swarm
	d       digest.Digest
	size    int64
	cached  bool
	dl      *download // nil when cached
	release func()
}

// Open returns d from the cache when complete, else starts (or joins) its
// download and returns once the metainfo is known. capability is the one
// the origin returned with the blob's authorization (auth.CapabilityHeader):
// the newest valid one is kept and presented to seeders and peers, which
// serve the blob only against one. Close the blob after use: a cached blob
// is not evicted while open.
func (s *Swarm) Open(ctx context.Context, d digest.Digest, capability string) (*Blob, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("opening blob: %w", err)
	}
	s.grant(d, capability)
	for {
		if info, err := s.store.Stat(d); err == nil && info.Complete {
			release, err := s.store.Acquire(d)
			if err == nil {
				s.metrics.cacheHits.Inc()
				return &Blob{s: s, d: d, size: info.Size, cached: true, release: release}, nil
			}
			// Evicted meanwhile: download it again.
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, errors.New("agent shutting down")
		}
		dl := s.startDownloadLocked(s.blobLocked(d))
		s.mu.Unlock()
		if err := dl.waitReady(ctx); err != nil {
			return nil, fmt.Errorf("downloading %s: %w", d, err)
		}
		release, err := s.store.Acquire(d)
		if err != nil {
			if isNotFound(err) {
				continue // completed and evicted at once, or dropped: start over
			}
			return nil, err
		}
		select {
		case <-dl.done:
			if dl.err != nil {
				release()
				return nil, fmt.Errorf("downloading %s: %w", d, dl.err)
			}
		default:
		}
		s.metrics.cacheMisses.Inc()
		return &Blob{s: s, d: d, size: dl.meta.Size, dl: dl, release: release}, nil
	}
}

// Size is the blob's size in bytes.
func (b *Blob) Size() int64 { return b.size }

// Cached reports whether the blob was complete in the cache when opened.
func (b *Blob) Cached() bool { return b.cached }

// Close releases the blob.
func (b *Blob) Close() error {
	b.release()
	return nil
}

// NewReader streams the blob from offset, returning only verified bytes,
// each as soon as its piece has arrived. Its position steers the download
// (pieces just ahead of it come first). A failed download fails the
// reader's Read.
func (b *Blob) NewReader(ctx context.Context, offset int64) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	if b.dl != nil {
		// A failed download wakes the reader; Close ends the watch.
		dl := b.dl
		go func() {
			select {
			case <-dl.done:
				if dl.err != nil {
					cancel(fmt.Errorf("downloading %s: %w", b.d, dl.err))
				}
			case <-ctx.Done():
			}
		}()
	}
	r, err := b.s.store.Reader(ctx, b.d, offset)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	br := &blobReader{r: r, ctx: ctx, cancel: cancel, dl: b.dl, id: int(b.s.readerIDs.Add(1)), lastPiece: -1, size: b.size,
		store: b.s.store, d: b.d}
	if b.dl != nil {
		br.verified = b.dl.verified
	}
	if b.dl != nil && b.dl.meta != nil {
		br.pieceLength = b.dl.meta.PieceLength
		br.report()
	}
	return br, nil
}

type blobReader struct {
	r           *piecestore.Reader
	ctx         context.Context
	cancel      context.CancelCauseFunc
	dl          *download
	id          int
	pieceLength int64
	lastPiece   int64
	size        int64
	// verified is the download's (nil for a blob complete when opened, or
	// once closed): the blob's last byte waits for it.
	verified <-chan struct{}
	store    *piecestore.Store
	d        digest.Digest
	// file is the blob's file once FileRange opened it; Close closes it.
	file *piecestore.BlobFile
	// noFile: the blob could not be opened once its download had ended
	// (failed, or evicted): FileRange does not try again.
	noFile bool
}

// FileRange returns the rest of the blob, from the reader's offset, as a
// region of a file of the reader's own, for a server that hands it to the
// kernel (sendfile(2)) instead of reading it through a buffer: ok only
// once the blob is complete in the store, so every byte of it verified and
// its digest checked. f is closed by Close; reading it does not move the
// reader.
func (r *blobReader) FileRange() (f *os.File, off, n int64, ok bool) {
	if r.noFile {
		return nil, 0, 0, false
	}
	if r.file == nil {
		if r.dl != nil {
			select {
			case <-r.dl.done:
			default:
				return nil, 0, 0, false // still downloading: no file to send yet
			}
		}
		bf, err := r.store.OpenFile(r.d)
		if err != nil {
			r.noFile = true // failed or evicted: Read says why
			return nil, 0, 0, false
		}
		r.file = bf
	}
	off = r.r.Offset()
	return r.file.File, off, r.size - off, true
}

func (r *blobReader) Read(p []byte) (int, error) {
	if r.verified != nil {
		// The last byte goes out only once the assembled blob matched its
		// digest: a mismatch must leave the client with a broken
		// response, not a complete one (digest.go).
		off, last := r.r.Offset(), r.size-1
		switch {
		case off >= r.size:
		case off == last:
			select {
			case <-r.verified:
				r.verified = nil
			case <-r.ctx.Done():
				return 0, r.cause()
			}
		case int64(len(p)) > last-off:
			p = p[:last-off]
		}
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.ctx.Err() != nil {
		err = r.cause()
	}
	r.report()
	return n, err
}

// cause says why the reader's context ended: the download's failure when
// that is why.
func (r *blobReader) cause() error {
	if cause := context.Cause(r.ctx); cause != nil {
		return cause
	}
	return r.ctx.Err()
}

// report tells the download where the reader is, once per piece.
func (r *blobReader) report() {
	if r.dl == nil || r.pieceLength == 0 {
		return
	}
	if p := r.r.Offset() / r.pieceLength; p != r.lastPiece {
		r.lastPiece = p
		r.dl.readerAt(r.id, r.r.Offset())
	}
}

func (r *blobReader) Close() error {
	if r.dl != nil {
		r.dl.readerAt(r.id, -1)
	}
	r.cancel(nil)
	if r.file != nil {
		_ = r.file.Close()
	}
	return r.r.Close()
}
