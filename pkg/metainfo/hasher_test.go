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
// metainfo Compute gives.
func TestHasherMatchesComputeAcrossRestores(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 15, 16, 17, 100, 160} {
		data := blob(size)
		d := digest.FromBytes(data)
		want, err := Compute(bytes.NewReader(data), d, int64(size), 16)
		if err != nil {
			t.Fatal(err)
		}
		h, err := NewHasher(16)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < size; {
			n := min(size-off, rng.IntN(40))
			_, _ = h.Write(data[off : off+n])
			off += n
			st, err := h.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			h = &Hasher{}
			if err := h.UnmarshalBinary(st); err != nil {
				t.Fatalf("size %d: restoring after %d bytes: %v", size, off, err)
			}
		}
		got, err := h.Metainfo(d)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if got.Size != want.Size || got.PieceLength != want.PieceLength || !slices.Equal(got.PieceHashes, want.PieceHashes) {
			t.Errorf("size %d: hasher gave %d bytes in %d pieces of %d, Compute %d in %d of %d, or other hashes",
				size, got.Size, got.NumPieces(), got.PieceLength, want.Size, want.NumPieces(), want.PieceLength)
		}
	}
}

func TestHasherRefusesBadStates(t *testing.T) {
	if _, err := NewHasher(24); err == nil {
		t.Error("NewHasher(24) accepted a piece length that is not a power of two")
	}
	h, _ := NewHasher(16)
	_, _ = h.Write(blob(40))
	st, _ := h.MarshalBinary()
	for name, b := range map[string][]byte{
		"empty":            nil,
		"other version":    append([]byte{9}, st[1:]...),
		"a hash missing":   st[:len(st)-HashSize],
		"truncated header": st[:10],
	} {
		if err := (&Hasher{}).UnmarshalBinary(b); err == nil {
			t.Errorf("%s state accepted", name)
		}
	}
}
