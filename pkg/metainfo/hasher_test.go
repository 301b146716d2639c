package metainfo

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Hashing a blob in writes of any size, with the state marshalled and
// restored between them (an upload's chunks on different nodes), gives the
// metainfo Compute gives, in either scheme.
func TestHasherMatchesComputeAcrossRestores(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		scheme      Scheme
		pieceLength int64
	}{{PerPiece, 16}, {Chained, 64}} {
		pl := int(tc.pieceLength)
		for _, size := range []int{0, 1, pl - 1, pl, pl + 1, 100, 2 * pl, 10*pl + 3} {
			data := blob(size)
			d := digest.FromBytes(data)
			want, err := Compute(bytes.NewReader(data), d, int64(size), tc.pieceLength)
			if err != nil {
				t.Fatal(err)
			}
			if want.Scheme != tc.scheme {
				t.Fatalf("Compute with pieces of %d bytes gave scheme %s, want %s", pl, want.Scheme, tc.scheme)
			}
			h, err := NewHasher(tc.scheme, tc.pieceLength)
			if err != nil {
				t.Fatal(err)
			}
			h = writeRestoring(t, h, data, rng, 3*pl)
			got, err := h.Metainfo(d)
			if err != nil {
				t.Fatalf("%s, size %d: %v", tc.scheme, size, err)
			}
			if got.Scheme != want.Scheme || got.Size != want.Size || got.PieceLength != want.PieceLength || !slices.Equal(got.PieceHashes, want.PieceHashes) {
				t.Errorf("%s, size %d: hasher gave %s %d bytes in %d pieces of %d, Compute %s %d in %d of %d, or other hashes",
					tc.scheme, size, got.Scheme, got.Size, got.NumPieces(), got.PieceLength, want.Scheme, want.Size, want.NumPieces(), want.PieceLength)
			}
			if tc.scheme == Chained && digest.NewDigest(digest.SHA256, h.BlobHash()) != d {
				t.Errorf("size %d: the chained hasher's SHA-256 is not the blob's digest", size)
			}
		}
	}
}

// writeRestoring writes data to h in writes of random sizes below
// maxWrite, marshalling its state after each and going on with a Hasher
// restored from it (an upload's chunks on different nodes), and returns
// the last one.
func writeRestoring(t *testing.T, h *Hasher, data []byte, rng *rand.Rand, maxWrite int) *Hasher {
	t.Helper()
	for off := 0; off < len(data); {
		n := min(len(data)-off, rng.IntN(maxWrite))
		_, _ = h.Write(data[off : off+n])
		off += n
		st, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		h = &Hasher{}
		if err := h.UnmarshalBinary(st); err != nil {
			t.Fatalf("size %d: restoring after %d bytes: %v", len(data), off, err)
		}
	}
	return h
}

func TestHasherRefusesBadStates(t *testing.T) {
	if _, err := NewHasher(PerPiece, 24); err == nil {
		t.Error("NewHasher(24) accepted a piece length that is not a power of two")
	}
	if _, err := NewHasher(Chained, 32); err == nil {
		t.Error("NewHasher(Chained, 32) accepted pieces smaller than a SHA-256 block")
	}
	if _, err := NewHasher(Scheme(7), 64); err == nil {
		t.Error("NewHasher accepted an unknown scheme")
	}
	for _, s := range []Scheme{PerPiece, Chained} {
		h, _ := NewHasher(s, 64)
		_, _ = h.Write(blob(150))
		st, _ := h.MarshalBinary()
		// The other scheme's version over the same bytes: its hash state
		// counts other bytes (the piece's, or the blob's).
		other := append([]byte{hasherPerPiece + hasherChained - st[0]}, st[1:]...)
		for name, b := range map[string][]byte{
			"empty":            nil,
			"other version":    append([]byte{9}, st[1:]...),
			"other scheme":     other,
			"a hash missing":   st[:len(st)-HashSize],
			"truncated header": st[:10],
		} {
			if err := (&Hasher{}).UnmarshalBinary(b); err == nil {
				t.Errorf("%s: %s state accepted", s, name)
			}
		}
	}
}

// A growing Hasher, fed a blob of a size it does not know in writes of any
// size with its state restored between them, gives the metainfo Compute
// gives with the policy's piece length for the final size: pieces doubled
// while more than the maximum count would be needed, up to the cap, then
// more pieces. (Small numbers: 64-byte pieces, at most 4, cap 512.)
func TestGrowingHasherFollowsThePolicy(t *testing.T) {
	const minLength, maxPieces, maxLength = 64, 4, 512
	rng := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{0, 1, 64, 255, 256, 257, 511, 512, 513, 1000, 2047, 2048, 2049, 2100, 4096, 5000} {
		data := blob(size)
		d := digest.FromBytes(data)
		pl := pieceLengthFor(int64(size), minLength, maxPieces, maxLength)
		want, err := Compute(bytes.NewReader(data), d, int64(size), pl)
		if err != nil {
			t.Fatal(err)
		}
		h, err := newGrowingHasher(minLength, maxPieces, maxLength)
		if err != nil {
			t.Fatal(err)
		}
		if h = writeRestoring(t, h, data, rng, 300); !h.Growing() {
			t.Fatalf("size %d: a restored growing hasher no longer grows", size)
		}
		got, err := h.Metainfo(d)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if got.Scheme != Chained || got.PieceLength != pl || got.Size != want.Size || !slices.Equal(got.PieceHashes, want.PieceHashes) {
			t.Errorf("size %d: growing hasher gave %d pieces of %d, Compute %d of %d (the policy's), or other hashes",
				size, got.NumPieces(), got.PieceLength, want.NumPieces(), want.PieceLength)
		}
	}
	if _, err := newGrowingHasher(64, 4, 96); err == nil {
		t.Error("a growing hasher took a cap that is not a power of two")
	}
	h, _ := newGrowingHasher(64, 4, 512)
	_, _ = h.Write(blob(300))
	st, _ := h.MarshalBinary()
	bad := bytes.Clone(st)
	binary.BigEndian.PutUint32(bad[17:], 2) // at most 2 pieces: 300 bytes are 3 of 128
	if err := (&Hasher{}).UnmarshalBinary(bad); err == nil {
		t.Error("a growing hasher's state with more pieces than its maximum was accepted")
	}
	if err := (&Hasher{}).UnmarshalBinary(st[:25]); err == nil {
		t.Error("a truncated growing hasher's state was accepted")
	}
}
