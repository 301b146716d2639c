package metainfo

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Version is the newest serialization version written by MarshalBinary
// and MarshalJSON: 2, which adds the scheme. PerPiece metainfo is still
// written as version 1, what every node before version 2 reads, and
// version 1 decodes as PerPiece: metainfo stored before chained piece
// hashes keeps working. Decoders reject other versions rather than guess,
// so a format change must bump it and teach the decoders the old ones.
const Version = 2

// versionFor is the version m is written in.
func versionFor(m *Metainfo) byte {
	if m.Scheme == PerPiece {
		return 1
	}
	return Version
}

// binaryMagic starts every binary metainfo so that a stray file under the
// metainfo prefix is recognised as not one.
var binaryMagic = [4]byte{'S', 'H', 'M', 'I'}

// The binary form, all integers big-endian:
//
//	magic "SHMI" | version u8 | [version 2: scheme u8] | digest length u8
//	| digest (ASCII) | size u64 | piece length u64 | piece count u32
//	| piece count × 32-byte piece hash
const binaryHeaderLen = 4 + 1 + 1

// MarshalBinary encodes m in Shoal's compact, versioned binary form: the
// form Store writes to storage.
func (m *Metainfo) MarshalBinary() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("encoding metainfo: %w", err)
	}
	d := string(m.Digest)
	if len(d) > 255 {
		return nil, fmt.Errorf("encoding metainfo: digest %q longer than 255 bytes", d)
	}
	b := make([]byte, 0, binaryHeaderLen+len(d)+8+8+4+len(m.PieceHashes)*HashSize)
	b = append(b, binaryMagic[:]...)
	b = append(b, versionFor(m))
	if versionFor(m) >= 2 {
		b = append(b, byte(m.Scheme))
	}
	b = append(b, byte(len(d)))
	b = append(b, d...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(m.PieceLength))
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.PieceHashes)))
	for _, h := range m.PieceHashes {
		b = append(b, h[:]...)
	}
	return b, nil
}

// UnmarshalBinary decodes the form written by MarshalBinary and validates
// the result.
func (m *Metainfo) UnmarshalBinary(b []byte) error {
	if len(b) < binaryHeaderLen || [4]byte(b[:4]) != binaryMagic {
		return fmt.Errorf("decoding metainfo: not a Shoal metainfo (bad magic)")
	}
	var out Metainfo
	rest := b[5:] // after the version
	switch v := b[4]; v {
	case 1:
	case 2:
		out.Scheme, rest = Scheme(rest[0]), rest[1:]
	default:
		return fmt.Errorf("decoding metainfo: unsupported version %d, want 1 to %d", v, Version)
	}
	if len(rest) < 1 {
		return fmt.Errorf("decoding metainfo: truncated header (%d bytes)", len(b))
	}
	dl := int(rest[0])
	rest = rest[1:]
	if len(rest) < dl+8+8+4 {
		return fmt.Errorf("decoding metainfo: truncated header (%d bytes)", len(b))
	}
	out.Digest = digest.Digest(rest[:dl])
	rest = rest[dl:]
	out.Size = int64(binary.BigEndian.Uint64(rest))
	out.PieceLength = int64(binary.BigEndian.Uint64(rest[8:]))
	n := binary.BigEndian.Uint32(rest[16:])
	rest = rest[20:]
	if uint64(len(rest)) != uint64(n)*HashSize {
		return fmt.Errorf("decoding metainfo for %s: %d bytes of piece hashes, want %d×%d", out.Digest, len(rest), n, HashSize)
	}
	out.PieceHashes = make([][HashSize]byte, n)
	for i := range out.PieceHashes {
		copy(out.PieceHashes[i][:], rest[i*HashSize:])
	}
	if err := out.Validate(); err != nil {
		return fmt.Errorf("decoding metainfo: %w", err)
	}
	*m = out
	return nil
}

// jsonMetainfo is the JSON form: readable for operators and debugging
// endpoints, with hashes in hex.
type jsonMetainfo struct {
	Version int `json:"version"`
	// Scheme is "chained" from version 2 on; absent, PerPiece.
	Scheme      string        `json:"scheme,omitempty"`
	Digest      digest.Digest `json:"digest"`
	Size        int64         `json:"size"`
	PieceLength int64         `json:"pieceLength"`
	PieceHashes []string      `json:"pieceHashes"`
}

// MarshalJSON encodes m as {"version":1,"digest":...,"size":...,
// "pieceLength":...,"pieceHashes":["<hex>",...]}, with "version":2 and
// "scheme":"chained" for Chained metainfo.
func (m *Metainfo) MarshalJSON() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("encoding metainfo: %w", err)
	}
	j := jsonMetainfo{Version: int(versionFor(m)), Digest: m.Digest, Size: m.Size, PieceLength: m.PieceLength,
		PieceHashes: make([]string, len(m.PieceHashes))}
	if m.Scheme != PerPiece {
		j.Scheme = m.Scheme.String()
	}
	for i, h := range m.PieceHashes {
		j.PieceHashes[i] = hex.EncodeToString(h[:])
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes the form written by MarshalJSON and validates it.
func (m *Metainfo) UnmarshalJSON(b []byte) error {
	var j jsonMetainfo
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("decoding metainfo JSON: %w", err)
	}
	out := Metainfo{Digest: j.Digest, Size: j.Size, PieceLength: j.PieceLength,
		PieceHashes: make([][HashSize]byte, len(j.PieceHashes))}
	switch {
	case j.Version == 1 && j.Scheme == "", j.Version == 2 && j.Scheme == PerPiece.String():
	case j.Version == 2 && j.Scheme == Chained.String():
		out.Scheme = Chained
	case j.Version == 1 || j.Version == 2:
		return fmt.Errorf("decoding metainfo JSON: unknown scheme %q in version %d", j.Scheme, j.Version)
	default:
		return fmt.Errorf("decoding metainfo JSON: unsupported version %d, want 1 to %d", j.Version, Version)
	}
	for i, s := range j.PieceHashes {
		if hex.DecodedLen(len(s)) != HashSize {
			return fmt.Errorf("decoding metainfo JSON for %s: piece %d hash %q is not %d hex bytes", j.Digest, i, s, HashSize)
		}
		if _, err := hex.Decode(out.PieceHashes[i][:], []byte(s)); err != nil {
			return fmt.Errorf("decoding metainfo JSON for %s: piece %d hash: %w", j.Digest, i, err)
		}
	}
	if err := out.Validate(); err != nil {
		return fmt.Errorf("decoding metainfo JSON: %w", err)
	}
	*m = out
	return nil
}
