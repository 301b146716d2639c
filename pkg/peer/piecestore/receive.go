package piecestore

import (
	"errors"
	"fmt"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// A piece can also be received straight into its blob's file, in order, as
// its bytes arrive from the network (StartPiece): the receiver then holds
// a small read buffer per connection instead of a buffer of the piece's
// size per piece arriving, which is most of an agent's memory in a large
// swarm (docs/agent.md, "Memory"). The bytes written are not visible to
// anyone (readers, uploads, reload) until Commit, with the hash the
// receiver computed as they arrived, records the piece as held.
//
// One writer at a time writes a piece's range of the file: StartPiece
// refuses a piece held, or being written by a PieceWriter or from a
// buffer (writePiece). A buffer verified whole takes the range over from a
// PieceWriter, which then writes nothing more: its bytes, unverified yet,
// must not land over the verified ones.

// ErrPieceBusy is wrapped by StartPiece for a piece held already, or being
// written by another writer: receive it into a buffer instead (PieceBuffer,
// WriteVerifiedPiece), or drop it.
var ErrPieceBusy = errors.New("piece held or being written")

// pieceClaim is who is writing a piece: a PieceWriter, and how many
// writers of verified buffers (which write the same bytes, so may
// overlap). Guarded by Store.mu.
type pieceClaim struct {
	w        *PieceWriter
	buffered int
	// done is closed when the claim goes: its writers have ended.
	done chan struct{}
}

// claimLocked returns piece i's claim, made if there is none; a
// PieceWriter holding it is revoked, as a buffer about to be written is
// verified and it is not.
func (s *Store) claimLocked(b *blob, i int) *pieceClaim {
	if b.writing == nil {
		b.writing = map[int]*pieceClaim{}
	}
	c := b.writing[i]
	if c == nil {
		c = &pieceClaim{done: make(chan struct{})}
		b.writing[i] = c
	}
	if c.w != nil {
		// Lock order: Store.mu, then PieceWriter.mu. The PieceWriter's
		// write in progress, if any, ends before this returns.
		c.w.mu.Lock()
		c.w.revoked = true
		c.w.mu.Unlock()
		c.w = nil
	}
	return c
}

// unclaimLocked ends a write of piece i: w's, or with w nil one from a
// buffer.
func (s *Store) unclaimLocked(b *blob, i int, w *PieceWriter) {
	c := b.writing[i]
	switch {
	case c == nil:
		return
	case w == nil:
		c.buffered--
	case c.w == w:
		c.w = nil
	}
	if c.w == nil && c.buffered == 0 {
		delete(b.writing, i)
		close(c.done)
	}
}

// PieceWriter writes one piece into its blob's file as it arrives; see
// StartPiece. Write and Commit (or Abort) are called from one goroutine.
type PieceWriter struct {
	s *Store
	b *blob
	d digest.Digest
	i int
	// off is the piece's offset in the file, size its length.
	off, size int64

	mu sync.Mutex
	n  int64 // bytes written, or skipped once revoked
	// revoked: a verified buffer of the piece is written instead, and
	// this writer writes nothing more.
	revoked bool
	ended   bool
}

// StartPiece starts receiving piece i of d into the blob's file: write its
// bytes in order to the PieceWriter, then Commit with their hash, or Abort.
// The blob is not evicted meanwhile. ErrPieceBusy if the piece is held or
// being written, ErrNotFound for a blob not held.
func (s *Store) StartPiece(d digest.Digest, i int) (*PieceWriter, error) {
	b, err := s.acquire(d)
	if err != nil {
		return nil, fmt.Errorf("receiving piece %d of %s: %w", i, d, err)
	}
	if i < 0 || i >= b.meta.NumPieces() {
		s.release(b)
		return nil, fmt.Errorf("receiving piece %d of %s: index out of range [0,%d)", i, d, b.meta.NumPieces())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.have.Has(i) || b.writing[i] != nil {
		s.releaseLocked(b)
		return nil, fmt.Errorf("receiving piece %d of %s: %w", i, d, ErrPieceBusy)
	}
	w := &PieceWriter{s: s, b: b, d: d, i: i, off: b.meta.PieceOffset(i), size: b.meta.PieceSize(i)}
	s.claimLocked(b, i).w = w
	return w, nil
}

// Write writes the piece's next bytes. Writing past the piece's size
// fails, as does a write after Commit or Abort.
func (w *PieceWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.ended:
		return 0, fmt.Errorf("receiving piece %d of %s: written to after it ended", w.i, w.d)
	case w.n+int64(len(p)) > w.size:
		return 0, fmt.Errorf("receiving piece %d of %s: %d bytes past %d of %d: %w", w.i, w.d, len(p), w.n, w.size, metainfo.ErrCorruptPiece)
	}
	if !w.revoked {
		if _, err := w.b.f.WriteAt(p, w.off+w.n); err != nil {
			return 0, fmt.Errorf("receiving piece %d of %s: %w", w.i, w.d, err)
		}
	}
	w.n += int64(len(p))
	return len(p), nil
}

// Commit ends the piece, whose bytes were written and hashed to sum by the
// caller as they arrived: sum is checked against the metainfo (a piece not
// whole or hashed otherwise is not recorded: metainfo.ErrCorruptPiece),
// the piece recorded as held and its readers woken. A piece held meanwhile
// (written from a verified buffer, which took over) is not recorded again:
// nil all the same, once that buffer is written.
func (w *PieceWriter) Commit(sum [metainfo.HashSize]byte) error {
	w.mu.Lock()
	ended, n := w.ended, w.n
	w.ended = true
	w.mu.Unlock()
	if ended {
		return fmt.Errorf("receiving piece %d of %s: committed after it ended", w.i, w.d)
	}
	s, b := w.s, w.b
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.releaseLocked(b)
	s.unclaimLocked(b, w.i, w)
	if err := verifiedSum(b.meta, w.i, n, sum); err != nil {
		return fmt.Errorf("receiving piece: %w", err)
	}
	// Read under Store.mu, which revoking takes: not revoked, this
	// writer held the range from its start to now, and holding the piece
	// is holding its bytes.
	w.mu.Lock()
	revoked := w.revoked
	w.mu.Unlock()
	if revoked {
		// The buffers that took over may still be being written: the
		// piece is the receiver's once they are.
		if c := b.writing[w.i]; c != nil && !b.have.Has(w.i) {
			s.mu.Unlock()
			<-c.done
			s.mu.Lock()
		}
		if b.have.Has(w.i) || b.removed {
			return nil
		}
		return fmt.Errorf("receiving piece %d of %s: taken over by a copy whose write failed", w.i, w.d)
	}
	written, err := b.holdLocked(w.d, w.i)
	if written {
		b.notifyLocked()
	}
	return err
}

// Abort ends the piece without recording it: its bytes in the file stay
// invisible, and the next writer of the piece overwrites them. Aborting an
// ended PieceWriter does nothing.
func (w *PieceWriter) Abort() {
	w.mu.Lock()
	ended := w.ended
	w.ended = true
	w.mu.Unlock()
	if ended {
		return
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.unclaimLocked(w.b, w.i, w)
	w.s.releaseLocked(w.b)
}
