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
