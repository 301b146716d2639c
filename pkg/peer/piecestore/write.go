package piecestore

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// Create makes room for the blob m describes and starts it: a sparse data
// file of its size, an empty bitfield, the metainfo. Creating a blob the
// store already holds with the same metainfo does nothing. Room is made by
// evicting blobs not in use; ErrQuotaExceeded if that is not enough.
func (s *Store) Create(m *metainfo.Metainfo) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("creating blob: %w", err)
	}
	enc, err := m.MarshalBinary()
	if err != nil {
		return fmt.Errorf("creating %s: %w", m.Digest, err)
	}
	dir, err := s.blobDir(m.Digest, false)
	if err != nil {
		return fmt.Errorf("creating blob: %w", err)
	}

	s.mu.Lock()
	for {
		wait, ok := s.creating[m.Digest]
		if !ok {
			break
		}
		// Another Create of the same blob is making its files.
		s.mu.Unlock()
		<-wait
		s.mu.Lock()
	}
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("creating %s: %w", m.Digest, ErrClosed)
	}
	if b, ok := s.blobs[m.Digest]; ok {
		s.mu.Unlock()
		if old, _ := b.meta.MarshalBinary(); !bytes.Equal(old, enc) {
			return fmt.Errorf("creating %s: %w", m.Digest, ErrMetainfoMismatch)
		}
		return nil
	}
	victims, ok := s.makeRoomLocked(m.Size)
	if !ok {
		s.mu.Unlock()
		s.dispose(victims)
		return fmt.Errorf("creating %s (%d bytes, %d of %d used by blobs in use): %w",
			m.Digest, m.Size, s.Used(), s.quota, ErrQuotaExceeded)
	}
	// Reserve the space and the name now; the files are made outside the
	// lock, and readers cannot find the blob until it is in the map.
	s.used += m.Size
	done := make(chan struct{})
	s.creating[m.Digest] = done
	s.mu.Unlock()
	s.dispose(victims)

	b, err := s.createFiles(dir, m, enc)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.creating, m.Digest)
	close(done)
	if err != nil {
		s.used -= m.Size
		return fmt.Errorf("creating %s: %w", m.Digest, err)
	}
	if s.closed {
		s.used -= m.Size
		_ = b.f.Close()
		return fmt.Errorf("creating %s: %w", m.Digest, ErrClosed)
	}
	s.blobs[m.Digest] = b
	s.touchLocked(b)
	return nil
}

func (s *Store) createFiles(dir string, m *metainfo.Metainfo, enc []byte) (*blob, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, dataFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	have := metainfo.NewBitfield(m.NumPieces())
	err = f.Truncate(m.Size)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, bitfieldFile), have.Bytes(), 0o644)
	}
	if err == nil {
		// Written last: a directory without a valid metainfo is dropped on
		// reload, so a crash here leaves nothing half-made behind.
		err = writeFileAtomic(filepath.Join(dir, metainfoFile), enc)
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &blob{meta: m, f: f, dir: dir, have: have, changed: make(chan struct{})}, nil
}

// WritePiece stores piece i of d. It verifies data against the metainfo
// first, whatever the caller checked: a bad piece is never written. A piece
// already held is not written again. The store keeps no reference to data
// (WritePieceBuffer hands a buffer over instead).
func (s *Store) WritePiece(d digest.Digest, i int, data []byte) error {
	b, err := s.acquire(d)
	if err != nil {
		return fmt.Errorf("writing piece %d of %s: %w", i, d, err)
	}
	defer s.release(b)
	_, err = s.writePiece(b, d, i, data, nil, false)
	return err
}

// writePiece verifies and writes piece i to b, on which the caller holds a
// reference; written is false if the piece was already held. A piece
// whose hash the caller computed comes with it in sum: it is checked
// against the metainfo instead of hashing data again. With keep, a
// written piece's buffer joins b's recent pieces before readers are
// woken, so that they read it from memory.
func (s *Store) writePiece(b *blob, d digest.Digest, i int, data []byte, sum *[metainfo.HashSize]byte, keep bool) (written bool, err error) {
	if sum != nil {
		err = verifiedSum(b.meta, i, int64(len(data)), *sum)
	} else {
		err = b.meta.Verify(i, data)
	}
	if err != nil {
		return false, fmt.Errorf("writing piece: %w", err)
	}
	s.mu.Lock()
	if b.have.Has(i) {
		s.mu.Unlock()
		return false, nil
	}
	// A PieceWriter receiving the piece stops writing it: this copy is
	// verified whole, that one is not yet.
	s.claimLocked(b, i).buffered++
	s.mu.Unlock()
	// Concurrent writers of different pieces touch disjoint ranges; two
	// writers of the same piece write the same verified bytes.
	_, err = b.f.WriteAt(data, b.meta.PieceOffset(i))

	s.mu.Lock()
	defer s.mu.Unlock()
	s.unclaimLocked(b, i, nil)
	if err != nil {
		return false, fmt.Errorf("writing piece %d of %s: %w", i, d, err)
	}
	if written, err = b.holdLocked(d, i); !written {
		return false, err
	}
	if keep {
		s.keepRecent(b, i, data)
	}
	b.notifyLocked()
	return true, nil
}

// holdLocked records piece i, whose bytes are in b's file, as held (the
// caller then wakes b's readers); written is false if it was already, or
// b was removed.
func (b *blob) holdLocked(d digest.Digest, i int) (written bool, err error) {
	if b.removed || b.have.Has(i) {
		return false, nil
	}
	b.have.Set(i)
	// The bitfield is not synced: after a crash, reload re-verifies every
	// piece it lists, so a bit set ahead of its data costs only a refetch.
	if !b.complete {
		if _, err := b.bitfieldWriteLocked(); err != nil {
			b.have.Clear(i)
			return false, fmt.Errorf("writing piece %d of %s: recording it: %w", i, d, err)
		}
	}
	return true, nil
}

// verifiedSum checks a piece hashed by the caller as Verify would, without
// hashing it: sum must be the metainfo's hash of piece i, n its size.
func verifiedSum(m *metainfo.Metainfo, i int, n int64, sum [metainfo.HashSize]byte) error {
	switch {
	case i < 0 || i >= len(m.PieceHashes):
		return fmt.Errorf("verifying piece %d of %s: index out of range [0,%d)", i, m.Digest, len(m.PieceHashes))
	case n != m.PieceSize(i):
		return fmt.Errorf("verifying piece %d of %s: got %d bytes, want %d: %w", i, m.Digest, n, m.PieceSize(i), metainfo.ErrCorruptPiece)
	case sum != m.PieceHashes[i]:
		return fmt.Errorf("verifying piece %d of %s: hashed by the receiver to %x, want %x: %w", i, m.Digest, sum, m.PieceHashes[i], metainfo.ErrCorruptPiece)
	}
	return nil
}

func (b *blob) bitfieldWriteLocked() (int, error) {
	f, err := os.OpenFile(filepath.Join(b.dir, bitfieldFile), os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	n, err := f.WriteAt(b.have.Bytes(), 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// Complete checks a blob whose pieces are all written against its digest,
// once, syncs it and moves it under complete/. Calling it again on a
// complete blob does nothing. ErrIncomplete if pieces are missing; on
// ErrDigestMismatch the blob is dropped (its readers fail with ErrRemoved).
func (s *Store) Complete(d digest.Digest) error {
	s.mu.Lock()
	b, ok := s.blobs[d]
	switch {
	case !ok:
		s.mu.Unlock()
		return fmt.Errorf("completing %s: %w", d, ErrNotFound)
	case b.complete:
		s.mu.Unlock()
		return nil
	case b.completing:
		s.mu.Unlock()
		return fmt.Errorf("completing %s: already being completed", d)
	case !b.have.Complete():
		s.mu.Unlock()
		return fmt.Errorf("completing %s: %d of %d pieces: %w", d, b.have.Count(), b.have.Len(), ErrIncomplete)
	}
	b.completing = true
	b.refs++
	s.mu.Unlock()

	var err error
	if !s.skipDigestCheck {
		err = checkDigest(b)
	}
	if err == nil {
		err = b.f.Sync()
	}
	var final string
	if err == nil {
		final, err = s.blobDir(d, true)
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(final), 0o755)
	}
	if err == nil {
		// Renaming the directory keeps b.f valid for the readers using it.
		err = os.Rename(b.dir, final)
	}
	if err == nil {
		_ = os.Remove(filepath.Join(final, bitfieldFile))
		err = syncDir(filepath.Dir(final))
	}

	s.mu.Lock()
	b.completing = false
	if err != nil {
		s.releaseLocked(b)
		victim := s.removeLocked(b)
		s.mu.Unlock()
		s.dispose([]*blob{victim})
		return fmt.Errorf("completing %s: %w", d, err)
	}
	b.dir = final
	b.complete = true
	removed := b.removed
	s.releaseLocked(b)
	s.mu.Unlock()
	if removed {
		// Removed while it was being moved: Remove deleted the old place.
		_ = os.RemoveAll(final)
		return fmt.Errorf("completing %s: %w", d, ErrRemoved)
	}
	return nil
}

func checkDigest(b *blob) error {
	v := b.meta.Digest.Verifier()
	if _, err := io.Copy(v, io.NewSectionReader(b.f, 0, b.meta.Size)); err != nil {
		return fmt.Errorf("reading the assembled blob: %w", err)
	}
	if !v.Verified() {
		return ErrDigestMismatch
	}
	return nil
}

// Remove drops d from the store at once, even if in use: its readers fail
// with ErrRemoved.
func (s *Store) Remove(d digest.Digest) error {
	s.mu.Lock()
	b, ok := s.blobs[d]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("removing %s: %w", d, ErrNotFound)
	}
	victim := s.removeLocked(b)
	s.mu.Unlock()
	s.dispose([]*blob{victim})
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
