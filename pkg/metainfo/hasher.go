package metainfo

import (
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"math/bits"
	"slices"

	"github.com/opencontainers/go-digest"
)

// Hasher computes a blob's piece hashes from its bytes written in order,
// one pass, whatever the sizes of the writes. Its state marshals
// (MarshalBinary), so that hashing can stop after any write and go on
// elsewhere: the origin's upload sessions keep it in their state and hash
// the pieces as the chunks arrive, on whichever node takes each chunk, so
// a pushed blob's metainfo is ready without reading it again.
//
// A Chained Hasher hashes the blob with one SHA-256 and notes its chaining
// value at each piece boundary: that SHA-256 is also the blob's digest
// (BlobHash), so a sha256 blob is hashed once for both. Chaining values at
// the boundaries of pieces of one length are those of pieces twice as
// long, every other one, so a Chained Hasher can also follow the piece
// length policy as the blob grows (NewGrowingHasher).
type Hasher struct {
	scheme      Scheme
	pieceLength int64
	// grow: the piece length follows pieceLengthFor(size, ..., maxPieces,
	// maxPieceLength) as bytes are written (NewGrowingHasher).
	grow           bool
	maxPieces      int
	maxPieceLength int64
	size           int64 // bytes written
	hashes         [][HashSize]byte
	// h is the SHA-256 of the piece being written (PerPiece), or of the
	// whole blob (Chained).
	h   hash.Hash
	err error // reading a chaining value failed (never, with crypto/sha256)
}

// NewHasher returns a Hasher of the given scheme for pieces of
// pieceLength bytes, a power of two no larger than MaxPieceLength (and
// for Chained, no smaller than SHA-256's block).
func NewHasher(s Scheme, pieceLength int64) (*Hasher, error) {
	if pieceLength <= 0 || pieceLength > MaxPieceLength || bits.OnesCount64(uint64(pieceLength)) != 1 {
		return nil, fmt.Errorf("piece length %d is not a power of two in [1, %d]", pieceLength, MaxPieceLength)
	}
	switch s {
	case PerPiece:
	case Chained:
		if pieceLength < sha256.BlockSize {
			return nil, fmt.Errorf("piece length %d is below SHA-256's block (%d bytes): chained piece hashes need whole blocks", pieceLength, sha256.BlockSize)
		}
	default:
		return nil, fmt.Errorf("unknown piece hash scheme %d", uint8(s))
	}
	return &Hasher{scheme: s, pieceLength: pieceLength, h: sha256.New()}, nil
}

// NewGrowingHasher returns a Chained Hasher whose piece length is
// PieceLengthFor the bytes written so far, for a blob whose size is not
// known until its last byte (an upload's chunks): it starts at
// DefaultPieceLength and, whenever more than TargetMaxPieces pieces
// would be needed, doubles it (up to MaxPolicyPieceLength) and keeps every
// other chaining value, those of the longer pieces' boundaries.
func NewGrowingHasher() *Hasher {
	h, _ := newGrowingHasher(DefaultPieceLength, TargetMaxPieces, MaxPolicyPieceLength)
	return h
}

func newGrowingHasher(pieceLength int64, maxPieces int, maxPieceLength int64) (*Hasher, error) {
	h, err := NewHasher(Chained, pieceLength)
	switch {
	case err != nil:
		return nil, err
	case maxPieces < 1:
		return nil, fmt.Errorf("growing piece hasher: at most %d pieces", maxPieces)
	case maxPieceLength < pieceLength || maxPieceLength > MaxPieceLength || bits.OnesCount64(uint64(maxPieceLength)) != 1:
		return nil, fmt.Errorf("growing piece hasher: piece length cap %d is not a power of two in [%d, %d]", maxPieceLength, pieceLength, MaxPieceLength)
	}
	h.grow, h.maxPieces, h.maxPieceLength = true, maxPieces, maxPieceLength
	return h, nil
}

// Growing reports whether the Hasher's piece length follows the policy
// as bytes are written (NewGrowingHasher).
func (h *Hasher) Growing() bool { return h.grow }

// Scheme is the scheme the Hasher was made for.
func (h *Hasher) Scheme() Scheme { return h.scheme }

// PieceLength is the piece length of the Hasher's pieces: the one it was
// made for, or a growing one's for the bytes written so far.
func (h *Hasher) PieceLength() int64 { return h.pieceLength }

// Size is how many bytes were written.
func (h *Hasher) Size() int64 { return h.size }

// BlobHash returns a Chained Hasher's SHA-256 of the bytes written, to
// take its sum or marshal its state; writing to it would leave bytes out
// of the piece hashes. It is nil for a PerPiece Hasher.
func (h *Hasher) BlobHash() hash.Hash {
	if h.scheme != Chained {
		return nil
	}
	return h.h
}

// Write hashes p as the next bytes of the blob. It never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if h.grow {
			h.growPieces()
		}
		k := min(int64(len(p)), h.pieceLength-h.size%h.pieceLength)
		_, _ = h.h.Write(p[:k])
		h.size += k
		p = p[k:]
		if h.size%h.pieceLength != 0 {
			continue
		}
		if h.scheme == PerPiece {
			h.hashes = append(h.hashes, [HashSize]byte(h.h.Sum(nil)))
			h.h.Reset()
			continue
		}
		cv, err := chainValue(h.h)
		if err != nil && h.err == nil {
			h.err = err
		}
		h.hashes = append(h.hashes, cv)
	}
	return n, nil
}

// growPieces doubles the piece length while the next byte written would
// make more than maxPieces pieces, keeping the chaining values of the
// longer pieces' boundaries: every other one. Write stops at every piece
// boundary, so when the pieces grow the size is at one, the last of
// maxPieces pieces.
func (h *Hasher) growPieces() {
	for h.pieceLength < h.maxPieceLength && h.size >= int64(h.maxPieces)*h.pieceLength {
		kept := make([][HashSize]byte, 0, len(h.hashes)/2)
		for i := 1; i < len(h.hashes); i += 2 {
			kept = append(kept, h.hashes[i])
		}
		h.hashes = kept
		h.pieceLength *= 2
	}
}

// Metainfo returns the metainfo of blob d, the bytes written so far. The
// caller vouches that they are d (it verified the digest); a Chained
// Hasher checks it too, since it hashed the blob. The Hasher can be
// written to further.
func (h *Hasher) Metainfo(d digest.Digest) (*Metainfo, error) {
	if h.err != nil {
		return nil, fmt.Errorf("metainfo from hashing: %w", h.err)
	}
	m := &Metainfo{Digest: d, Size: h.size, PieceLength: h.pieceLength, Scheme: h.scheme, PieceHashes: h.hashes[:len(h.hashes):len(h.hashes)]}
	switch {
	case h.scheme == Chained && d.Algorithm() != digest.SHA256:
		return nil, fmt.Errorf("metainfo from hashing: chained piece hashes are for sha256 blobs, not %s", d)
	case h.size%h.pieceLength != 0:
		m.PieceHashes = append(m.PieceHashes, [HashSize]byte(h.h.Sum(nil)))
	case h.scheme == Chained && h.size > 0:
		// The last piece ends at a block boundary: its hash is the
		// blob's SHA-256, not the chaining value noted there.
		m.PieceHashes = slices.Clone(m.PieceHashes)
		m.PieceHashes[len(m.PieceHashes)-1] = [HashSize]byte(h.h.Sum(nil))
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("metainfo from hashing: %w", err)
	}
	return m, nil
}

// The first byte of a marshalled Hasher: its scheme.
const (
	hasherPerPiece = 1
	hasherChained  = 2
	hasherGrowing  = 3 // Chained, from NewGrowingHasher
)

// MarshalBinary returns the Hasher's state: version u8 (1 PerPiece, 2
// Chained, 3 growing Chained) | piece length u64 | size u64 | [version
// 3: max pieces u32 | piece length cap u64] | hash state length u16 | the
// SHA-256 state (of the piece being written, or of the blob) | the
// hashes of the whole pieces (big-endian).
func (h *Hasher) MarshalBinary() ([]byte, error) {
	if h.err != nil {
		return nil, fmt.Errorf("piece hasher: %w", h.err)
	}
	st, err := h.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("piece hasher: %w", err)
	}
	v := byte(hasherPerPiece)
	switch {
	case h.grow:
		v = hasherGrowing
	case h.scheme == Chained:
		v = hasherChained
	}
	b := make([]byte, 0, 1+8+8+12+2+len(st)+len(h.hashes)*HashSize)
	b = append(b, v)
	b = binary.BigEndian.AppendUint64(b, uint64(h.pieceLength))
	b = binary.BigEndian.AppendUint64(b, uint64(h.size))
	if h.grow {
		b = binary.BigEndian.AppendUint32(b, uint32(h.maxPieces))
		b = binary.BigEndian.AppendUint64(b, uint64(h.maxPieceLength))
	}
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
	if len(b) < 1+8+8+2 {
		return bad("truncated")
	}
	version := b[0]
	pl, size := int64(binary.BigEndian.Uint64(b[1:])), int64(binary.BigEndian.Uint64(b[9:]))
	b = b[17:]
	var nh *Hasher
	var err error
	switch version {
	case hasherPerPiece:
		nh, err = NewHasher(PerPiece, pl)
	case hasherChained:
		nh, err = NewHasher(Chained, pl)
	case hasherGrowing:
		if len(b) < 12 {
			return bad("truncated")
		}
		maxPieces, maxLength := binary.BigEndian.Uint32(b), int64(binary.BigEndian.Uint64(b[4:]))
		b = b[12:]
		nh, err = newGrowingHasher(pl, int(min(maxPieces, math.MaxInt32)), maxLength)
		if err == nil && size > int64(maxPieces)*pl && pl != maxLength {
			err = errors.New("more pieces than its maximum")
		}
	default:
		return bad(fmt.Sprintf("unknown version %d", version))
	}
	if err != nil {
		return bad(err.Error())
	}
	if len(b) < 2 {
		return bad("truncated")
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < n {
		return bad("truncated hash state")
	}
	if err := nh.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[:n]); err != nil {
		return fmt.Errorf("piece hasher state: %w", err)
	}
	// The SHA-256 state ends with the count of bytes it hashed: those of
	// the piece being written, or of the blob.
	hashed := size % pl
	if nh.scheme == Chained {
		hashed = size
	}
	if size < 0 || n < 8 || int64(binary.BigEndian.Uint64(b[n-8:n])) != hashed {
		return errors.New("piece hasher state: its SHA-256 state does not match its size")
	}
	b = b[n:]
	if len(b)%HashSize != 0 || int64(len(b)/HashSize) != size/pl {
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
