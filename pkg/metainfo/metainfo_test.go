package metainfo

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
)

// blob returns n deterministic, non-repeating-per-piece bytes.
func blob(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestPieceLengthFor(t *testing.T) {
	const MiB, GiB = 1 << 20, 1 << 30
	tests := []struct {
		size int64
		want int64
	}{
		{0, 1 * MiB},
		{1, 1 * MiB},
		{1 * MiB, 1 * MiB},
		{64 * MiB, 1 * MiB},
		{1 * GiB, 1 * MiB},    // exactly 1024 pieces
		{1*GiB + 1, 2 * MiB},  // 1025 pieces at 1 MiB: double
		{4 * GiB, 4 * MiB},    // 1024 pieces
		{4*GiB + 1, 8 * MiB},  // 1025 pieces at 4 MiB: double
		{64 * GiB, 64 * MiB},  // 1024 pieces at the cap
		{200 * GiB, 64 * MiB}, // cap holds; more pieces instead
		{1 << 50, 64 * MiB},
	}
	for _, tt := range tests {
		got := PieceLengthFor(tt.size)
		if got != tt.want {
			t.Errorf("PieceLengthFor(%d) = %d, want %d", tt.size, got, tt.want)
		}
		if got&(got-1) != 0 {
			t.Errorf("PieceLengthFor(%d) = %d is not a power of two", tt.size, got)
		}
		if got < MaxPolicyPieceLength && NumPieces(tt.size, got) > TargetMaxPieces {
			t.Errorf("PieceLengthFor(%d) = %d gives %d pieces, more than %d below the cap", tt.size, got, NumPieces(tt.size, got), TargetMaxPieces)
		}
	}
}

func TestComputeSplitsIntoPieces(t *testing.T) {
	tests := []struct {
		name        string
		size        int
		pieceLength int64
		wantPieces  int
	}{
		{"empty", 0, 16, 0},
		{"one byte", 1, 16, 1},
		{"one short piece", 10, 16, 1},
		{"exact multiple", 64, 16, 4},
		{"remainder", 65, 16, 5},
		{"piece larger than copy buffer", 300 << 10, 256 << 10, 2},
		{"chained, exact multiple", 256, 64, 4},
		{"chained, remainder", 200, 64, 4},
		{"chained, one short piece", 10, 64, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := blob(tt.size)
			d := digest.FromBytes(data)
			m, err := Compute(bytes.NewReader(data), d, int64(tt.size), tt.pieceLength)
			if err != nil {
				t.Fatalf("Compute: %v", err)
			}
			if m.NumPieces() != tt.wantPieces {
				t.Fatalf("NumPieces = %d, want %d", m.NumPieces(), tt.wantPieces)
			}
			// A sha256 blob's pieces are chained once they are whole
			// SHA-256 blocks.
			if want := map[bool]Scheme{false: PerPiece, true: Chained}[tt.pieceLength >= 64]; m.Scheme != want {
				t.Fatalf("scheme %s, want %s", m.Scheme, want)
			}
			var total int64
			for i := range m.NumPieces() {
				off, n := m.PieceOffset(i), m.PieceSize(i)
				if off != total {
					t.Errorf("piece %d offset %d, want %d", i, off, total)
				}
				piece := data[off : off+n]
				if want := sha256.Sum256(piece); m.Scheme == PerPiece && m.PieceHashes[i] != want {
					t.Errorf("piece %d hash %x, want %x", i, m.PieceHashes[i], want)
				}
				if err := m.Verify(i, piece); err != nil {
					t.Errorf("Verify(%d) of the right bytes: %v", i, err)
				}
				total += n
			}
			if total != int64(tt.size) {
				t.Errorf("pieces cover %d bytes, want %d", total, tt.size)
			}
		})
	}
}

func TestComputeSHA512Blob(t *testing.T) {
	data := blob(100)
	d := digest.SHA512.FromBytes(data)
	m, err := Compute(bytes.NewReader(data), d, 100, 32)
	if err != nil {
		t.Fatalf("Compute with a sha512 digest: %v", err)
	}
	if m.Digest != d || m.NumPieces() != 4 {
		t.Fatalf("got digest %s with %d pieces, want %s with 4", m.Digest, m.NumPieces(), d)
	}
	if err := m.Verify(3, data[96:]); err != nil {
		t.Fatalf("piece hashes are SHA-256 even for a sha512 blob: %v", err)
	}
}

func TestComputeRejects(t *testing.T) {
	data := blob(100)
	d := digest.FromBytes(data)
	readErr := errors.New("disk on fire")
	tests := []struct {
		name        string
		r           io.Reader
		d           digest.Digest
		size        int64
		pieceLength int64
		wantErr     string
	}{
		{"wrong digest", bytes.NewReader(data), digest.FromString("other"), 100, 16, "has digest"},
		{"short blob", bytes.NewReader(data[:90]), d, 100, 16, "ended after 90 bytes"},
		{"long blob", bytes.NewReader(append(blob(100), 1)), d, 100, 16, "longer than 100"},
		{"read error", io.MultiReader(bytes.NewReader(data[:20]), iotest.ErrReader(readErr)), d, 100, 16, "disk on fire"},
		{"piece length not power of two", bytes.NewReader(data), d, 100, 24, "power of two"},
		{"piece length zero", bytes.NewReader(data), d, 100, 0, "power of two"},
		{"piece length too large", bytes.NewReader(data), d, 100, MaxPieceLength * 2, "power of two"},
		{"negative size", bytes.NewReader(data), d, -1, 16, "negative size"},
		{"invalid digest", bytes.NewReader(data), "sha256:xyz", 100, 16, "invalid digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compute(tt.r, tt.d, tt.size, tt.pieceLength)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Compute error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestVerifyRejectsBadPieces(t *testing.T) {
	data := blob(40)
	m, err := Compute(bytes.NewReader(data), digest.FromBytes(data), 40, 16)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), data[16:32]...)
	flipped[5] ^= 1
	tests := []struct {
		name    string
		i       int
		data    []byte
		corrupt bool // want ErrCorruptPiece, as opposed to a caller error
	}{
		{"one bit flipped", 1, flipped, true},
		{"another piece's bytes", 0, data[16:32], true},
		{"truncated", 1, data[16:31], true},
		{"last piece padded", 2, append(append([]byte(nil), data[32:]...), 0), true},
		{"index past the end", 3, data[32:], false},
		{"negative index", -1, data[:16], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.Verify(tt.i, tt.data)
			if err == nil {
				t.Fatalf("Verify(%d) accepted bad data", tt.i)
			}
			if got := errors.Is(err, ErrCorruptPiece); got != tt.corrupt {
				t.Fatalf("Verify(%d) = %v; errors.Is(ErrCorruptPiece) = %v, want %v", tt.i, err, got, tt.corrupt)
			}
		})
	}
	if err := m.Verify(2, data[32:]); err != nil {
		t.Fatalf("Verify of the short last piece: %v", err)
	}
}

// chained returns a Chained metainfo of blob(size) with pieces of
// pieceLength bytes, and the blob.
func chained(t *testing.T, size int, pieceLength int64) (*Metainfo, []byte) {
	t.Helper()
	data := blob(size)
	m, err := Compute(bytes.NewReader(data), digest.FromBytes(data), int64(size), pieceLength)
	if err != nil {
		t.Fatal(err)
	}
	if m.Scheme != Chained {
		t.Fatalf("Compute of a sha256 blob with %d-byte pieces gave scheme %s, want chained", pieceLength, m.Scheme)
	}
	return m, data
}

func TestChainedVerify(t *testing.T) {
	m, data := chained(t, 1000, 64) // 15 pieces of 64 bytes and one of 40
	piece := func(i int) []byte { return data[m.PieceOffset(i) : m.PieceOffset(i)+m.PieceSize(i)] }
	for i := range m.NumPieces() {
		if err := m.Verify(i, piece(i)); err != nil {
			t.Fatalf("Verify(%d) of the right bytes: %v", i, err)
		}
	}
	// The piece hashes are the blob's SHA-256 at the boundaries, not each
	// piece's own: piece 0's is the chaining value after one block.
	if own := sha256.Sum256(piece(0)); m.PieceHashes[0] == own {
		t.Fatal("piece 0's hash is its own SHA-256, not a chaining value")
	}
	if last := m.PieceHashes[m.NumPieces()-1]; digest.NewDigestFromBytes(digest.SHA256, last[:]) != m.Digest {
		t.Fatalf("the last piece hash %x is not the blob's digest %s", last, m.Digest)
	}
	flipped := bytes.Clone(piece(3))
	flipped[17] ^= 1
	last := piece(m.NumPieces() - 1)
	tests := []struct {
		name string
		i    int
		data []byte
	}{
		{"one bit flipped", 3, flipped},
		{"another piece's bytes (wrong index)", 4, piece(3)},
		{"the first piece at the second's index", 1, piece(0)},
		{"pieces 3 and 4 swapped", 3, piece(4)},
		{"truncated piece", 5, piece(5)[:63]},
		{"truncated last piece", m.NumPieces() - 1, last[:len(last)-1]},
		{"last piece padded", m.NumPieces() - 1, append(bytes.Clone(last), 0)},
		{"last piece empty", m.NumPieces() - 1, nil},
		{"a whole piece as the last", m.NumPieces() - 1, piece(2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := m.Verify(tt.i, tt.data); !errors.Is(err, ErrCorruptPiece) {
				t.Fatalf("Verify(%d) = %v, want ErrCorruptPiece", tt.i, err)
			}
		})
	}
	if err := m.Verify(m.NumPieces(), nil); err == nil || errors.Is(err, ErrCorruptPiece) {
		t.Fatalf("Verify past the end = %v, want an index error", err)
	}
}

// A PieceDigester written a piece in writes of any size gives the piece's
// hash, and refuses a piece that is short of a whole block.
func TestPieceDigesterAcrossWrites(t *testing.T) {
	m, data := chained(t, 64*10+5, 128)
	for i := range m.NumPieces() {
		pd, err := m.PieceDigester(i)
		if err != nil {
			t.Fatal(err)
		}
		p := data[m.PieceOffset(i) : m.PieceOffset(i)+m.PieceSize(i)]
		for len(p) > 0 {
			n := min(len(p), 1+len(p)/3)
			_, _ = pd.Write(p[:n])
			p = p[n:]
		}
		if err := pd.Verify(); err != nil || pd.Sum() != m.PieceHashes[i] {
			t.Fatalf("piece %d in small writes: %v, sum %x, want %x", i, err, pd.Sum(), m.PieceHashes[i])
		}
	}
	pd, _ := m.PieceDigester(1)
	_, _ = pd.Write(data[128 : 128+100])
	if err := pd.Verify(); !errors.Is(err, ErrCorruptPiece) {
		t.Fatalf("a piece cut inside a block verified: %v", err)
	}
}

// A blob whose pieces all verify against Chained metainfo is the blob its
// digest names: the chain ends in the digest, which Validate requires,
// and each piece goes on from the state the previous one was checked to
// reach.
func TestChainedPiecesImplyTheDigest(t *testing.T) {
	m, data := chained(t, 5000, 256)
	whole := sha256.New()
	for i := range m.NumPieces() {
		p := data[m.PieceOffset(i) : m.PieceOffset(i)+m.PieceSize(i)]
		if err := m.Verify(i, p); err != nil {
			t.Fatal(err)
		}
		whole.Write(p)
	}
	if got := digest.NewDigest(digest.SHA256, whole); got != m.Digest {
		t.Fatalf("the verified pieces hash to %s, not the digest %s", got, m.Digest)
	}
	// Metainfo whose chain ends elsewhere than its digest: pieces that
	// verify against it would not be the blob.
	other := *m
	other.Digest = digest.FromString("another blob")
	if err := other.Validate(); err == nil {
		t.Fatal("chained metainfo whose last hash is not its digest validated")
	}
	// An empty blob's chained metainfo must name the empty blob.
	empty, _ := chained(t, 0, 64)
	empty.Digest = digest.FromString("not empty")
	if err := empty.Validate(); err == nil {
		t.Fatal("chained metainfo of no bytes validated with another digest")
	}
}

func TestValidateChainedNeedsSHA256AndWholeBlocks(t *testing.T) {
	m, _ := chained(t, 300, 64)
	sha512 := *m
	sha512.Digest = digest.SHA512.FromString("x")
	small := *m
	small.PieceLength, small.PieceHashes = 32, make([][HashSize]byte, 10)
	small.PieceHashes[9] = m.PieceHashes[len(m.PieceHashes)-1]
	unknown := *m
	unknown.Scheme = 9
	for name, bad := range map[string]*Metainfo{"sha512 digest": &sha512, "32-byte pieces": &small, "unknown scheme": &unknown} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%s: chained metainfo validated", name)
		}
	}
	if m, err := Compute(bytes.NewReader(blob(100)), digest.SHA512.FromBytes(blob(100)), 100, 64); err != nil || m.Scheme != PerPiece {
		t.Fatalf("Compute of a sha512 blob: %v, want per-piece metainfo", err)
	}
}
