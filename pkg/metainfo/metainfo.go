// Package metainfo describes how a blob is split into pieces for peer-to-peer
// transfer, and verifies pieces with SHA-256.
//
// The origin computes a blob's Metainfo once, stores it under Shoal's own
// prefix (Store), and seeders hand it to agents: as the blob is pushed (a
// Hasher fed the upload's chunks), or from the stored blob (Compute) for
// blobs that came otherwise. Agents check
// every piece with Verify before storing or serving it: peers are not
// trusted with data, and a bad piece is caught before one byte of it reaches
// a client. Piece hashes are always SHA-256, whatever the blob's digest
// algorithm; what they hash is the metainfo's Scheme: for a sha256 blob,
// the chaining values of the blob's own SHA-256 at the piece boundaries
// (Chained), so that verifying every piece verifies the blob and nothing
// hashes it twice; else each piece's own SHA-256 (PerPiece).
package metainfo

import (
	"crypto/sha256"
	// Registers SHA-512 so that sha512 blob digests validate and hash.
	_ "crypto/sha512"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/bits"

	"github.com/opencontainers/go-digest"
)

// Scheme says what a metainfo's piece hashes are. It is part of what the
// origin signs, of the stored encoding and of the wire form.
type Scheme uint8

const (
	// PerPiece: PieceHashes[i] is the SHA-256 of piece i's bytes alone.
	// The scheme of sha512 blobs, of piece lengths below SHA-256's block,
	// and of every metainfo stored before Chained existed (their encoding
	// has no scheme).
	PerPiece Scheme = 0
	// Chained (sha256 blobs): PieceHashes[i] is the chaining value of the
	// blob's SHA-256 after its first i+1 pieces, and the last one is the
	// blob's SHA-256, its digest. Piece lengths are powers of two of at
	// least SHA-256's 64-byte block, so each boundary is a block boundary
	// where the hash state is exactly the chaining value and the offset:
	// piece i is verified by hashing its bytes from the state after piece
	// i-1 (Verify), and a blob whose pieces all verify has its digest.
	Chained Scheme = 1
)

func (s Scheme) String() string {
	switch s {
	case PerPiece:
		return "per-piece"
	case Chained:
		return "chained"
	}
	return fmt.Sprintf("scheme(%d)", uint8(s))
}

// SchemeFor returns the scheme of new metainfo for blob d with pieces of
// pieceLength bytes: Chained when d is sha256 and pieceLength a multiple
// of SHA-256's block (every piece length from PieceLengthFor is), else
// PerPiece.
func SchemeFor(d digest.Digest, pieceLength int64) Scheme {
	if d.Algorithm() == digest.SHA256 && pieceLength >= sha256.BlockSize && pieceLength%sha256.BlockSize == 0 {
		return Chained
	}
	return PerPiece
}

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
	// Scheme says what PieceHashes are.
	Scheme Scheme
	// PieceHashes holds one hash per piece, in order: the SHA-256 of the
	// piece (PerPiece) or the blob's SHA-256 chaining value after it
	// (Chained).
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
	pd, err := m.PieceDigester(i)
	if err != nil {
		return err
	}
	_, _ = pd.Write(data)
	return pd.Verify()
}

// PieceDigester hashes piece i of a blob as its bytes arrive, one pass
// whatever the sizes of the writes: in the PerPiece scheme from
// SHA-256's initial state, in the Chained one from the blob's SHA-256
// state after piece i-1.
type PieceDigester struct {
	m       *Metainfo
	i       int
	n       int64 // bytes written
	h       hash.Hash
	chainCV bool // Sum is the chaining value (Chained, not the last piece)
}

// PieceDigester returns a PieceDigester for piece i.
func (m *Metainfo) PieceDigester(i int) (*PieceDigester, error) {
	if i < 0 || i >= len(m.PieceHashes) {
		return nil, fmt.Errorf("verifying piece %d of %s: index out of range [0,%d)", i, m.Digest, len(m.PieceHashes))
	}
	pd := &PieceDigester{m: m, i: i, h: sha256.New()}
	if m.Scheme != Chained {
		return pd, nil
	}
	pd.chainCV = i < len(m.PieceHashes)-1
	if i > 0 {
		if err := setChainState(pd.h, m.PieceHashes[i-1], m.PieceOffset(i)); err != nil {
			return nil, fmt.Errorf("verifying piece %d of %s: %w", i, m.Digest, err)
		}
	}
	return pd, nil
}

// Write hashes p as the piece's next bytes. It never fails.
func (pd *PieceDigester) Write(p []byte) (int, error) {
	pd.n += int64(len(p))
	return pd.h.Write(p)
}

// Sum returns the hash of the bytes written, to compare with
// PieceHashes[i]: it is that hash only if exactly the piece's bytes were
// written, which Verify checks too.
func (pd *PieceDigester) Sum() [HashSize]byte {
	if pd.chainCV && pd.n%sha256.BlockSize == 0 {
		if cv, err := chainValue(pd.h); err == nil {
			return cv
		}
	}
	// Also what a chained piece of a wrong length gets: its hash
	// with SHA-256's padding, not a chaining value.
	return [HashSize]byte(pd.h.Sum(nil))
}

// Verify checks that the bytes written are exactly piece i, as Verify
// does.
func (pd *PieceDigester) Verify() error {
	m, i := pd.m, pd.i
	if want := m.PieceSize(i); pd.n != want {
		return fmt.Errorf("verifying piece %d of %s: got %d bytes, want %d: %w", i, m.Digest, pd.n, want, ErrCorruptPiece)
	}
	if pd.Sum() != m.PieceHashes[i] {
		return fmt.Errorf("verifying piece %d of %s (%s): %w", i, m.Digest, m.Scheme, ErrCorruptPiece)
	}
	return nil
}

// A marshalled crypto/sha256 state (encoding.BinaryMarshaler): magic
// "sha\x03" | 8 big-endian words of chaining value | the 64-byte block
// buffer, padded with zeros | the byte count, big-endian u64. At a block
// boundary the buffer is empty, so the chaining value and the offset
// are the whole state.
const (
	sha256Magic    = "sha\x03"
	sha256StateLen = len(sha256Magic) + HashSize + sha256.BlockSize + 8
)

// chainValue returns the chaining value of h, a SHA-256 written a
// multiple of its block size.
func chainValue(h hash.Hash) ([HashSize]byte, error) {
	var buf [sha256StateLen]byte
	b, err := h.(encoding.BinaryAppender).AppendBinary(buf[:0])
	switch {
	case err != nil:
		return [HashSize]byte{}, fmt.Errorf("reading the SHA-256 state: %w", err)
	case len(b) != sha256StateLen || string(b[:len(sha256Magic)]) != sha256Magic:
		return [HashSize]byte{}, errors.New("reading the SHA-256 state: not crypto/sha256's format")
	case binary.BigEndian.Uint64(b[sha256StateLen-8:])%sha256.BlockSize != 0:
		return [HashSize]byte{}, errors.New("reading the SHA-256 state: not at a block boundary")
	}
	return [HashSize]byte(b[len(sha256Magic):]), nil
}

// setChainState sets h, a SHA-256, to the state after offset bytes (a
// multiple of its block size) whose chaining value is cv.
func setChainState(h hash.Hash, cv [HashSize]byte, offset int64) error {
	var b [sha256StateLen]byte
	copy(b[:], sha256Magic)
	copy(b[len(sha256Magic):], cv[:])
	binary.BigEndian.PutUint64(b[sha256StateLen-8:], uint64(offset))
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[:]); err != nil {
		return fmt.Errorf("restoring the SHA-256 state at %d: %w", offset, err)
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
	switch m.Scheme {
	case PerPiece:
	case Chained:
		return m.validateChained()
	default:
		return fmt.Errorf("invalid metainfo for %s: unknown scheme %d", m.Digest, uint8(m.Scheme))
	}
	return nil
}

// validateChained checks what the Chained scheme adds: a sha256 blob,
// pieces a whole number of SHA-256 blocks, and the last piece's hash the
// blob's digest (an empty blob's digest that of no bytes), so that a blob
// whose pieces verify is the blob its digest names.
func (m *Metainfo) validateChained() error {
	if m.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("invalid metainfo for %s: chained piece hashes are for sha256 blobs only", m.Digest)
	}
	if m.PieceLength%sha256.BlockSize != 0 {
		return fmt.Errorf("invalid metainfo for %s: chained piece hashes need pieces of whole SHA-256 blocks, not %d bytes", m.Digest, m.PieceLength)
	}
	var sum [HashSize]byte
	if _, err := hex.Decode(sum[:], []byte(m.Digest.Encoded())); err != nil {
		return fmt.Errorf("invalid metainfo for %s: %w", m.Digest, err)
	}
	last := [HashSize]byte(sha256.New().Sum(nil))
	if n := len(m.PieceHashes); n > 0 {
		last = m.PieceHashes[n-1]
	}
	if last != sum {
		return fmt.Errorf("invalid metainfo for %s: the chained hash after the last piece is %x, not the digest", m.Digest, last)
	}
	return nil
}
