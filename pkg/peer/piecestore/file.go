package piecestore

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
)

// BlobFile is a complete blob's data file opened for one sender alone, for
// handing to the kernel through an io.ReaderFrom: Linux's sendfile(2), as
// net.TCPConn.ReadFrom calls it, reads from the file's own position and
// moves it, which the store's shared file (PieceSection) must never have
// done to it. The blob is not evicted until Close.
type BlobFile struct {
	// File is the blob's data, opened read-only with a position of its
	// own: Seek and Read it freely. Close closes it.
	File *os.File
	// Size is the blob's size in bytes.
	Size int64

	release func()
}

// Close closes File and lets the blob go. It may be called more than once.
func (f *BlobFile) Close() error {
	f.release()
	return nil
}

// OpenFile opens the data file of d, which must be complete (its digest
// checked): ErrNotFound for a blob not held, ErrIncomplete for one still
// downloading.
func (s *Store) OpenFile(d digest.Digest) (*BlobFile, error) {
	b, err := s.acquire(d)
	if err != nil {
		return nil, fmt.Errorf("opening the file of %s: %w", d, err)
	}
	s.mu.Lock()
	complete, dir := b.complete, b.dir
	s.mu.Unlock()
	if !complete {
		s.release(b)
		return nil, fmt.Errorf("opening the file of %s: %w", d, ErrIncomplete)
	}
	// A complete blob's directory no longer moves. Opened by path, not
	// duplicated: a dup shares the position with the store's file.
	f, err := os.Open(filepath.Join(dir, dataFile))
	if err != nil {
		s.release(b)
		return nil, fmt.Errorf("opening the file of %s: %w", d, err)
	}
	var once sync.Once
	return &BlobFile{File: f, Size: b.meta.Size, release: func() {
		once.Do(func() {
			_ = f.Close()
			s.release(b)
		})
	}}, nil
}
