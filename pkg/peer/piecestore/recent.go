package piecestore

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// The store keeps the last few pieces written to each blob in memory, in
// the buffers they were verified in, and serves reads from there: a client
// streaming a blob as it downloads, and peers asking for the pieces this
// agent just got (the ones they lack), read them without a pread and its
// copy. Writes still go through the page cache, which serves the older
// pieces to peers (O_DIRECT writes were measured and dropped: see
// docs/agent.md).

const (
	// recentPerBlob is how many pieces a blob keeps in memory: the
	// streaming reader trails the newest piece by about one, and peers ask
	// for the newest pieces first.
	recentPerBlob = 4
	// recentBudget bounds the bytes held in memory by all blobs together
	// (16 blobs' worth of 4 MiB pieces at recentPerBlob, 64 MiB).
	recentBudget = 64 << 20
)

// recent is a blob's in-memory tail of pieces.
type recent struct {
	mu     sync.Mutex
	pieces []recentPiece // oldest first
}

type recentPiece struct {
	off  int64
	data []byte
}

// buffers recycles piece buffers: a fresh 4 MiB buffer per piece costs
// zeroing and garbage at the rate of the download.
type buffers struct {
	pool sync.Pool
	held atomic.Int64 // bytes held by all blobs' recent pieces
}

// PieceBuffer returns an empty buffer with room for size bytes, for
// assembling a piece to hand to WritePieceBuffer (or back with
// PutPieceBuffer if it is not written).
func (s *Store) PieceBuffer(size int64) []byte {
	if p, ok := s.bufs.pool.Get().(*[]byte); ok && int64(cap(*p)) >= size {
		return (*p)[:0]
	}
	return make([]byte, 0, size)
}

// PutPieceBuffer returns a buffer from PieceBuffer that was not handed to
// WritePieceBuffer.
func (s *Store) PutPieceBuffer(b []byte) {
	if cap(b) == 0 {
		return
	}
	b = b[:0]
	s.bufs.pool.Put(&b)
}

// WritePieceBuffer is WritePiece taking ownership of data, a buffer from
// PieceBuffer: the store keeps the piece in memory for readers while it is
// among the blob's newest, and recycles the buffer afterwards (at once when
// the write fails or the piece was already held). The caller must not use
// data after the call.
func (s *Store) WritePieceBuffer(d digest.Digest, i int, data []byte) error {
	return s.handOver(d, i, data, nil, true)
}

// WriteVerifiedPiece is WritePieceBuffer for a piece the caller hashed as
// its bytes arrived, with sum that hash: each piece is hashed once. sum is
// checked against the blob's metainfo (a piece hashed against another
// metainfo, or of the wrong size, is refused with
// metainfo.ErrCorruptPiece), data is not read; the caller vouches that sum
// is its piece hash (metainfo.PieceDigester). The piece data path's client (internal/piecewire) hashes
// every piece to drop a corrupt peer at its first bad piece.
//
// Unlike WritePieceBuffer's, the buffer is recycled once written, not kept
// among the recent pieces: the piece data path writes pieces into the file
// as they arrive (StartPiece), and a piece comes in a buffer only when
// another connection is writing it already (two peers asked for it at the
// end of a download). Kept, four such buffers would stay for the whole
// download, while the reader finds the piece in the page cache.
func (s *Store) WriteVerifiedPiece(d digest.Digest, i int, data []byte, sum [metainfo.HashSize]byte) error {
	return s.handOver(d, i, data, &sum, false)
}

// handOver writes data, a buffer from PieceBuffer, as piece i of d; with
// keep it joins the recent pieces, else it is recycled.
func (s *Store) handOver(d digest.Digest, i int, data []byte, sum *[metainfo.HashSize]byte, keep bool) error {
	b, err := s.acquire(d)
	if err != nil {
		s.PutPieceBuffer(data)
		return fmt.Errorf("writing piece %d of %s: %w", i, d, err)
	}
	defer s.release(b)
	written, err := s.writePiece(b, d, i, data, sum, keep)
	if err != nil || !written || !keep {
		s.PutPieceBuffer(data)
	}
	return err
}

// keepRecent adds piece i (its buffer now owned by the store) to b's
// recent pieces, recycling the oldest beyond recentPerBlob or the store's
// budget. Called with s.mu held (lock order: s.mu, then recent.mu).
func (s *Store) keepRecent(b *blob, i int, data []byte) {
	size := int64(len(data))
	b.recent.mu.Lock()
	defer b.recent.mu.Unlock()
	for len(b.recent.pieces) > 0 &&
		(len(b.recent.pieces) >= recentPerBlob || s.bufs.held.Load()+size > recentBudget) {
		s.dropOldestLocked(b)
	}
	if s.bufs.held.Load()+size > recentBudget || b.removed {
		s.PutPieceBuffer(data)
		return
	}
	s.bufs.held.Add(size)
	b.recent.pieces = append(b.recent.pieces, recentPiece{off: b.meta.PieceOffset(i), data: data})
}

func (s *Store) dropOldestLocked(b *blob) {
	p := b.recent.pieces[0]
	b.recent.pieces[0] = recentPiece{}
	b.recent.pieces = b.recent.pieces[1:]
	s.bufs.held.Add(-int64(len(p.data)))
	s.PutPieceBuffer(p.data)
}

// dropRecent recycles every recent piece of b: when it is removed, or
// complete and no longer in use.
func (s *Store) dropRecent(b *blob) {
	b.recent.mu.Lock()
	defer b.recent.mu.Unlock()
	for len(b.recent.pieces) > 0 {
		s.dropOldestLocked(b)
	}
	b.recent.pieces = nil
}

// readRecent copies into p the bytes at off from a recent piece of b, if
// one holds off; ok is false if none does.
func (b *blob) readRecent(p []byte, off int64) (n int, ok bool) {
	b.recent.mu.Lock()
	defer b.recent.mu.Unlock()
	for _, rp := range b.recent.pieces {
		if off >= rp.off && off < rp.off+int64(len(rp.data)) {
			return copy(p, rp.data[off-rp.off:]), true
		}
	}
	return 0, false
}
