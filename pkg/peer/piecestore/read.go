package piecestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
)

// ReadPiece returns piece i of d, which must be held: what an agent uploads
// to a peer. The bytes were verified when written.
func (s *Store) ReadPiece(d digest.Digest, i int) ([]byte, error) {
	b, err := s.acquirePiece(d, i)
	if err != nil {
		return nil, fmt.Errorf("reading piece %d of %s: %w", i, d, err)
	}
	defer s.release(b)
	buf := make([]byte, b.meta.PieceSize(i))
	if _, err := b.f.ReadAt(buf, b.meta.PieceOffset(i)); err != nil {
		return nil, fmt.Errorf("reading piece %d of %s: %w", i, d, err)
	}
	return buf, nil
}

// Reader streams d from offset to its end, waiting for each piece to be
// written before returning its bytes, so a client can be served while the
// blob downloads; only verified bytes are ever returned. A Read blocks
// until the piece it needs arrives, ctx is done (ctx.Err() is returned) or
// the blob is removed (ErrRemoved). The blob is not evicted while the
// reader is open: Close it.
func (s *Store) Reader(ctx context.Context, d digest.Digest, offset int64) (*Reader, error) {
	b, err := s.acquire(d)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d, err)
	}
	if offset < 0 || offset > b.meta.Size {
		s.release(b)
		return nil, fmt.Errorf("reading %s: offset %d outside [0, %d]", d, offset, b.meta.Size)
	}
	return &Reader{s: s, b: b, ctx: ctx, off: offset}, nil
}

// Reader is a streaming reader returned by Store.Reader. It is not safe
// for concurrent use.
type Reader struct {
	s   *Store
	b   *blob
	ctx context.Context
	off int64
	// avail is the end of the bytes known to be held from off on.
	avail  int64
	closed bool
}

// Offset returns the position of the next byte Read returns: the agent
// reports it to the scheduler (scheduler.ReaderAt) so pieces there come
// first.
func (r *Reader) Offset() int64 { return r.off }

// Read reads from the pieces available at the reader's offset, waiting for
// the first one needed if it has not arrived.
func (r *Reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errors.New("piece store reader: read after Close")
	}
	m := r.b.meta
	if r.off >= m.Size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.b.gone.Load() {
		return 0, fmt.Errorf("reading %s: %w", m.Digest, ErrRemoved)
	}
	if r.off >= r.avail {
		// Pieces are never un-held, so everything up to the end of the
		// run of held pieces found here can be read without the lock.
		last, err := r.wait(int(r.off / m.PieceLength))
		if err != nil {
			return 0, err
		}
		r.avail = m.PieceOffset(last) + m.PieceSize(last)
	}
	p = p[:min(int64(len(p)), r.avail-r.off)]
	if n, ok := r.b.readRecent(p, r.off); ok {
		r.off += int64(n)
		return n, nil
	}
	n, err := r.b.f.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF {
		err = nil // the file is pre-sized: a short read is a racing Close
	}
	if err != nil {
		return n, fmt.Errorf("reading %s at %d: %w", m.Digest, r.off, err)
	}
	return n, nil
}

// wait blocks until piece i is held and returns the last piece of the run
// of held pieces starting at i.
func (r *Reader) wait(i int) (int, error) {
	s, b := r.s, r.b
	for {
		s.mu.Lock()
		if b.removed {
			s.mu.Unlock()
			return 0, fmt.Errorf("reading %s: %w", b.meta.Digest, ErrRemoved)
		}
		if b.complete {
			s.mu.Unlock()
			return b.have.Len() - 1, nil
		}
		if b.have.Has(i) {
			last := i
			for last+1 < b.have.Len() && b.have.Has(last+1) {
				last++
			}
			s.mu.Unlock()
			return last, nil
		}
		changed := b.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// Close releases the blob. It never fails.
func (r *Reader) Close() error {
	if !r.closed {
		r.closed = true
		r.s.release(r.b)
	}
	return nil
}

// PieceSection is where a held piece lies in its blob's data file, for a
// sender that hands the file to the kernel (sendfile(2)) instead of
// reading it: the bytes are in the file (or its page cache) from the moment
// the piece is held, whether or not it is also among the recent pieces in
// memory. The blob is not evicted, nor its file closed, until Release.
type PieceSection struct {
	// File is the blob's data file, shared with every other user: read it
	// at an offset (ReadAt, sendfile with an offset), never move its
	// position, never close it.
	File *os.File
	// Offset and Size place the piece in File.
	Offset, Size int64

	release func()
}

// Release lets the blob go; File must not be used afterwards. It may be
// called more than once.
func (p *PieceSection) Release() { p.release() }

// PieceSection returns where piece i of d, which must be held, lies on
// disk: ErrNotFound for a blob not held, ErrPieceMissing for a piece not
// written yet.
func (s *Store) PieceSection(d digest.Digest, i int) (*PieceSection, error) {
	b, err := s.acquirePiece(d, i)
	if err != nil {
		return nil, fmt.Errorf("opening piece %d of %s: %w", i, d, err)
	}
	var once sync.Once
	return &PieceSection{File: b.f, Offset: b.meta.PieceOffset(i), Size: b.meta.PieceSize(i),
		release: func() { once.Do(func() { s.release(b) }) }}, nil
}

// acquirePiece takes a reference on d if it holds piece i: ErrNotFound or
// ErrPieceMissing otherwise, with no reference taken.
func (s *Store) acquirePiece(d digest.Digest, i int) (*blob, error) {
	b, err := s.acquire(d)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	held := b.have.Has(i)
	s.mu.Unlock()
	if !held {
		s.release(b)
		return nil, ErrPieceMissing
	}
	return b, nil
}
