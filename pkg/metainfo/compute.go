package metainfo

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
)

// Compute reads a blob of size bytes from r and returns its metainfo with
// the given piece length. The blob is hashed while it streams, one piece at a
// time, so memory use does not grow with the blob or the piece length. It
// fails if r yields fewer or more than size bytes, or bytes whose digest is
// not want: metainfo is only ever computed for a blob that is what its name
// says.
func Compute(r io.Reader, want digest.Digest, size, pieceLength int64) (*Metainfo, error) {
	if err := want.Validate(); err != nil {
		return nil, fmt.Errorf("computing metainfo: invalid digest %q: %w", want, err)
	}
	m := &Metainfo{Digest: want, Size: size, PieceLength: pieceLength}
	if size < 0 {
		return nil, fmt.Errorf("computing metainfo for %s: negative size %d", want, size)
	}
	// Validate the piece length before reading anything: a bad one is a
	// caller bug, not a storage problem.
	m.PieceHashes = make([][HashSize]byte, NumPieces(size, pieceLength))
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("computing metainfo: %w", err)
	}

	blob := want.Algorithm().Digester()
	piece := sha256.New()
	w := io.MultiWriter(blob.Hash(), piece)
	buf := make([]byte, 128<<10)
	for i := range m.PieceHashes {
		n := m.PieceSize(i)
		piece.Reset()
		got, err := io.CopyBuffer(w, io.LimitReader(r, n), buf)
		if err != nil {
			return nil, fmt.Errorf("computing metainfo for %s: reading piece %d: %w", want, i, err)
		}
		if got != n {
			return nil, fmt.Errorf("computing metainfo for %s: blob ended after %d bytes, want %d", want, m.PieceOffset(i)+got, size)
		}
		piece.Sum(m.PieceHashes[i][:0])
	}
	// One more byte would mean the blob is larger than size: a stale size
	// from a HEAD, or the wrong file.
	var extra [1]byte
	if n, err := io.ReadFull(r, extra[:]); n != 0 {
		return nil, fmt.Errorf("computing metainfo for %s: blob is longer than %d bytes", want, size)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("computing metainfo for %s: reading past the end: %w", want, err)
	}
	if got := blob.Digest(); got != want {
		return nil, fmt.Errorf("computing metainfo for %s: blob content has digest %s", want, got)
	}
	return m, nil
}
