package metainfo

import (
	"bytes"
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
			for off := 0; off < size; {
				n := min(size-off, rng.IntN(3*pl))
				_, _ = h.Write(data[off : off+n])
				off += n
				st, err := h.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				h = &Hasher{}
				if err := h.UnmarshalBinary(st); err != nil {
					t.Fatalf("%s, size %d: restoring after %d bytes: %v", tc.scheme, size, off, err)
				}
			}
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
