package metainfo

import (
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math/bits"

	"github.com/opencontainers/go-digest"
)

// Hasher computes a blob's piece hashes from its bytes written in order,
// one pass, whatever the sizes of the writes. Its state marshals
// (MarshalBinary), so that hashing can stop after any write and go on
// elsewhere: the origin's upload sessions keep it with their digest state
// and hash the pieces as the chunks arrive, on whichever node takes each
// chunk, so a pushed blob's metainfo is ready without reading it again.
type Hasher struct {
	pieceLength int64
	size        int64 // bytes written
	hashes      [][HashSize]byte
	piece       hash.Hash // over the bytes of the piece being written
}

// NewHasher returns a Hasher for pieces of pieceLength bytes, a power of
// two no larger than MaxPieceLength.
func NewHasher(pieceLength int64) (*Hasher, error) {
	if pieceLength <= 0 || pieceLength > MaxPieceLength || bits.OnesCount64(uint64(pieceLength)) != 1 {
		return nil, fmt.Errorf("piece length %d is not a power of two in [1, %d]", pieceLength, MaxPieceLength)
	}
	return &Hasher{pieceLength: pieceLength, piece: sha256.New()}, nil
}

// PieceLength is the piece length the Hasher was made for.
func (h *Hasher) PieceLength() int64 { return h.pieceLength }

// Size is how many bytes were written.
func (h *Hasher) Size() int64 { return h.size }

// Write hashes p as the next bytes of the blob. It never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(int64(len(p)), h.pieceLength-h.size%h.pieceLength)
		_, _ = h.piece.Write(p[:k])
		h.size += k
		p = p[k:]
		if h.size%h.pieceLength == 0 {
			h.hashes = append(h.hashes, [HashSize]byte(h.piece.Sum(nil)))
			h.piece.Reset()
		}
	}
	return n, nil
}

// Metainfo returns the metainfo of blob d, the bytes written so far. The
// caller vouches that they are d (it verified the digest); the Hasher can
// be written to further.
func (h *Hasher) Metainfo(d digest.Digest) (*Metainfo, error) {
	m := &Metainfo{Digest: d, Size: h.size, PieceLength: h.pieceLength, PieceHashes: h.hashes[:len(h.hashes):len(h.hashes)]}
	if h.size%h.pieceLength != 0 {
		m.PieceHashes = append(m.PieceHashes, [HashSize]byte(h.piece.Sum(nil)))
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("metainfo from hashing: %w", err)
	}
	return m, nil
}

// hasherVersion is the first byte of a marshalled Hasher.
const hasherVersion = 1

// MarshalBinary returns the Hasher's state: version u8 | piece length u64 |
// size u64 | piece hash state length u16 | piece hash state | the hashes of
// the whole pieces (big-endian).
func (h *Hasher) MarshalBinary() ([]byte, error) {
	st, err := h.piece.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("piece hasher: %w", err)
	}
	b := make([]byte, 0, 1+8+8+2+len(st)+len(h.hashes)*HashSize)
	b = append(b, hasherVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(h.pieceLength))
	b = binary.BigEndian.AppendUint64(b, uint64(h.size))
	b = binary.BigEndian.AppendUint16(b, uint16(len(st)))
	b = append(b, st...)
	for _, p := range h.hashes {
		b = append(b, p[:]...)
	}
	return b, nil
}

// UnmarshalBinary restores a state of MarshalBinary.
func (h *Hasher) UnmarshalBinary(b []byte) error {
	bad := func(what string) error { return fmt.Errorf("piece hasher state: %s", what) }
	if len(b) < 1+8+8+2 || b[0] != hasherVersion {
		return bad("unknown version or truncated")
	}
	pl, size := int64(binary.BigEndian.Uint64(b[1:])), int64(binary.BigEndian.Uint64(b[9:]))
	n := int(binary.BigEndian.Uint16(b[17:]))
	b = b[19:]
	if len(b) < n {
		return bad("truncated hash state")
	}
	nh, err := NewHasher(pl)
	if err != nil {
		return bad(err.Error())
	}
	if err := nh.piece.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[:n]); err != nil {
		return fmt.Errorf("piece hasher state: %w", err)
	}
	b = b[n:]
	if size < 0 || len(b)%HashSize != 0 || int64(len(b)/HashSize) != size/pl {
		return errors.New("piece hasher state: piece hashes do not match its size")
	}
	nh.size = size
	nh.hashes = make([][HashSize]byte, len(b)/HashSize)
	for i := range nh.hashes {
		copy(nh.hashes[i][:], b[i*HashSize:])
	}
	*h = *nh
	return nil
}
