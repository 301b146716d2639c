// Package metainfo describes how a blob is split into pieces for peer-to-peer
// transfer, and verifies pieces against their SHA-256.
//
// The origin computes a blob's Metainfo once, stores it under Shoal's own
// prefix (Store), and seeders hand it to agents: as the blob is pushed (a
// Hasher fed the upload's chunks), or from the stored blob (Compute) for
// blobs that came otherwise. Agents check
// every piece with Verify before storing or serving it: peers are not
// trusted with data, and a bad piece is caught before one byte of it reaches
// a client. Piece hashes are always SHA-256, whatever the blob's digest
// algorithm.
package metainfo

import (
	"bytes"
	"crypto/sha256"
	// Registers SHA-512 so that sha512 blob digests validate and hash.
	_ "crypto/sha512"
	"errors"
	"fmt"
	"math/bits"

	"github.com/opencontainers/go-digest"
)

// HashSize is the length of a piece hash (SHA-256).
const HashSize = sha256.Size

// MaxPieceLength bounds the piece length accepted from storage or the wire.
// A piece is buffered whole while it is verified, so the bound keeps a
// hostile or corrupt metainfo from making an agent allocate without limit.
const MaxPieceLength = 256 << 20

// ErrCorruptPiece is returned (wrapped) by Verify when a piece's bytes do not
// hash to the expected value. The peer that sent it should be dropped.
var ErrCorruptPiece = errors.New("piece hash mismatch")

// Metainfo is the piece layout of one blob.
type Metainfo struct {
	// Digest is the blob's digest (sha256 or sha512).
	Digest digest.Digest
	// Size is the blob's length in bytes.
	Size int64
	// PieceLength is the length of every piece but the last, a power of two.
	PieceLength int64
	// PieceHashes holds the SHA-256 of each piece, in order.
	PieceHashes [][HashSize]byte
	// Signature is the origin's Ed25519 signature over the fields above
	// (auth.Key.SignMetainfo), and KeyID names the key that made it. They
	// travel with GetMetainfo answers only: stored and cached forms leave
	// them out, since the origin signs what it serves and an agent checks
	// it on receipt (auth.Verifier.VerifyMetainfo).
	Signature []byte
	KeyID     string
}

// NumPieces returns how many pieces a blob of size bytes has with the given
// piece length. An empty blob has no pieces.
func NumPieces(size, pieceLength int64) int {
	if size <= 0 || pieceLength <= 0 {
		return 0
	}
	return int((size + pieceLength - 1) / pieceLength)
}

// NumPieces returns the number of pieces of the blob.
func (m *Metainfo) NumPieces() int { return len(m.PieceHashes) }

// PieceOffset returns the offset of piece i within the blob.
func (m *Metainfo) PieceOffset(i int) int64 { return int64(i) * m.PieceLength }

// PieceSize returns the length of piece i: PieceLength, except for the last
// piece which holds the remainder. It returns 0 for an index out of range.
func (m *Metainfo) PieceSize(i int) int64 {
	if i < 0 || i >= len(m.PieceHashes) {
		return 0
	}
	if i == len(m.PieceHashes)-1 {
		return m.Size - m.PieceOffset(i)
	}
	return m.PieceLength
}

// Verify checks that data is exactly piece i. A wrong length or hash is
// reported as an error wrapping ErrCorruptPiece.
func (m *Metainfo) Verify(i int, data []byte) error {
	if i < 0 || i >= len(m.PieceHashes) {
		return fmt.Errorf("verifying piece %d of %s: index out of range [0,%d)", i, m.Digest, len(m.PieceHashes))
	}
	if want := m.PieceSize(i); int64(len(data)) != want {
		return fmt.Errorf("verifying piece %d of %s: got %d bytes, want %d: %w", i, m.Digest, len(data), want, ErrCorruptPiece)
	}
	sum := sha256.Sum256(data)
	if !bytes.Equal(sum[:], m.PieceHashes[i][:]) {
		return fmt.Errorf("verifying piece %d of %s: %w", i, m.Digest, ErrCorruptPiece)
	}
	return nil
}

// Validate checks that the fields are consistent: a valid digest, a piece
// length that is a power of two no larger than MaxPieceLength, and one hash
// per piece. Everything decoded from storage or the wire goes through it.
func (m *Metainfo) Validate() error {
	if err := m.Digest.Validate(); err != nil {
		return fmt.Errorf("invalid metainfo digest %q: %w", m.Digest, err)
	}
	if m.Size < 0 {
		return fmt.Errorf("invalid metainfo for %s: negative size %d", m.Digest, m.Size)
	}
	if m.PieceLength <= 0 || m.PieceLength > MaxPieceLength || bits.OnesCount64(uint64(m.PieceLength)) != 1 {
		return fmt.Errorf("invalid metainfo for %s: piece length %d is not a power of two in [1, %d]", m.Digest, m.PieceLength, MaxPieceLength)
	}
	if want := NumPieces(m.Size, m.PieceLength); len(m.PieceHashes) != want {
		return fmt.Errorf("invalid metainfo for %s: %d piece hashes, want %d for size %d and piece length %d",
			m.Digest, len(m.PieceHashes), want, m.Size, m.PieceLength)
	}
	return nil
}
