package metainfo

import (
	"bytes"
	"testing"

	"github.com/opencontainers/go-digest"
)

// BenchmarkCompute measures metainfo computation throughput (MB/s) for a
// 64 MiB blob with the default piece length: the cost an origin owner pays
// once per blob. The metainfo is chained, so the blob's SHA-256 is the
// piece hashes too: every byte is hashed once.
func BenchmarkCompute(b *testing.B) {
	data := blob(64 << 20)
	d := digest.FromBytes(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compute(bytes.NewReader(data), d, int64(len(data)), PieceLengthFor(int64(len(data)))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify measures Verify of one 4 MiB piece in the middle of a
// blob, in either scheme: a chained piece starts from the state rebuilt
// from the previous piece's chaining value, a per-piece one from SHA-256's
// initial state, so both cost one SHA-256 of the piece.
func BenchmarkVerify(b *testing.B) {
	const pl = DefaultPieceLength
	data := blob(4 * pl)
	d := digest.FromBytes(data)
	chained, err := Compute(bytes.NewReader(data), d, int64(len(data)), pl)
	if err != nil {
		b.Fatal(err)
	}
	h, _ := NewHasher(PerPiece, pl)
	_, _ = h.Write(data)
	perPiece, err := h.Metainfo(d)
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range []*Metainfo{chained, perPiece} {
		b.Run(m.Scheme.String(), func(b *testing.B) {
			piece := data[2*pl : 3*pl]
			b.SetBytes(pl)
			b.ReportAllocs()
			for b.Loop() {
				if err := m.Verify(2, piece); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
