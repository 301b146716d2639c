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
		{0, 4 * MiB},
		{1, 4 * MiB},
		{4 * MiB, 4 * MiB},
		{64 * MiB, 4 * MiB},
		{4 * GiB, 4 * MiB},    // exactly 1024 pieces
		{4*GiB + 1, 8 * MiB},  // 1025 pieces at 4 MiB: double
		{8 * GiB, 8 * MiB},    // 1024 pieces
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
			var total int64
			for i := range m.NumPieces() {
				off, n := m.PieceOffset(i), m.PieceSize(i)
				if off != total {
					t.Errorf("piece %d offset %d, want %d", i, off, total)
				}
				piece := data[off : off+n]
				if want := sha256.Sum256(piece); m.PieceHashes[i] != want {
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
