package metainfo

import (
	"fmt"
	"math/bits"
)

// Bitfield records which pieces of a blob a peer holds, in the wire order of
// shoal.peer.v1 and shoal.tracker.v1: bit i is piece i, most significant bit
// of byte 0 first, ceil(n/8) bytes, spare bits zero. It is not safe for
// concurrent use.
type Bitfield struct {
	bits []byte
	n    int
}

// NewBitfield returns an empty bitfield for n pieces.
func NewBitfield(n int) *Bitfield {
	return &Bitfield{bits: make([]byte, (n+7)/8), n: n}
}

// ParseBitfield decodes a bitfield for n pieces received from a peer,
// rejecting a wrong length or set spare bits.
func ParseBitfield(b []byte, n int) (*Bitfield, error) {
	if len(b) != (n+7)/8 {
		return nil, fmt.Errorf("parsing bitfield: %d bytes, want %d for %d pieces", len(b), (n+7)/8, n)
	}
	if spare := n % 8; spare != 0 && b[len(b)-1]&(0xff>>spare) != 0 {
		return nil, fmt.Errorf("parsing bitfield: spare bits set beyond piece %d", n)
	}
	return &Bitfield{bits: append([]byte(nil), b...), n: n}, nil
}

// Len returns the number of pieces the bitfield covers.
func (b *Bitfield) Len() int { return b.n }

// Has reports whether piece i is held; false for an index out of range.
func (b *Bitfield) Has(i int) bool {
	if i < 0 || i >= b.n {
		return false
	}
	return b.bits[i/8]&(0x80>>(i%8)) != 0
}

// Set marks piece i as held. It panics on an index out of range, which is
// always a bug in the caller: indexes come from validated messages.
func (b *Bitfield) Set(i int) {
	if i < 0 || i >= b.n {
		panic(fmt.Sprintf("metainfo: bitfield index %d out of range [0,%d)", i, b.n))
	}
	b.bits[i/8] |= 0x80 >> (i % 8)
}

// Clear marks piece i as not held (evicted). Out-of-range indexes are ignored.
func (b *Bitfield) Clear(i int) {
	if i >= 0 && i < b.n {
		b.bits[i/8] &^= 0x80 >> (i % 8)
	}
}

// Count returns the number of pieces held.
func (b *Bitfield) Count() int { return CountBits(b.bits) }

// Complete reports whether every piece is held.
func (b *Bitfield) Complete() bool { return b.Count() == b.n }

// Bytes returns the wire form. The slice is shared; copy it to keep it past
// the next Set or Clear.
func (b *Bitfield) Bytes() []byte { return b.bits }

// CountBits returns the number of set bits in a wire-form bitfield, without
// validating it: the tracker uses it on announces it only counts.
func CountBits(b []byte) int {
	c := 0
	for _, x := range b {
		c += bits.OnesCount8(x)
	}
	return c
}

// SetAll marks every piece as held, as for a peer that completed the blob.
func (b *Bitfield) SetAll() {
	for i := range b.bits {
		b.bits[i] = 0xff
	}
	if spare := b.n % 8; spare != 0 {
		b.bits[len(b.bits)-1] = 0xff << (8 - spare)
	}
}
