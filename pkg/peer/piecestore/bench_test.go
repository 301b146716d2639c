package piecestore

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// benchBlob is 64 MiB in 4 MiB pieces, the default piece length.
func benchBlob(b *testing.B) ([]byte, *metainfo.Metainfo) {
	const size = 64 << 20
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < size; i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			data[i+k] = byte(v >> (8 * k))
		}
	}
	m, err := metainfo.Compute(bytes.NewReader(data), digest.FromBytes(data), size, metainfo.DefaultPieceLength)
	if err != nil {
		b.Fatal(err)
	}
	return data, m
}

// BenchmarkReaderComplete streams a complete blob the way the mirror
// serves a warm pull (32 KiB buffers, as io.Copy uses).
func BenchmarkReaderComplete(b *testing.B) {
	data, m := benchBlob(b)
	s, err := Open(b.TempDir(), 1<<30, quiet())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Create(m); err != nil {
		b.Fatal(err)
	}
	for i := range m.NumPieces() {
		if err := s.WritePiece(m.Digest, i, piece(data, m, i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Complete(m.Digest); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(m.Size)
	buf := make([]byte, 32<<10)
	for b.Loop() {
		r, err := s.Reader(context.Background(), m.Digest, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}

// BenchmarkWritePiece measures verifying and writing 4 MiB pieces.
func BenchmarkWritePiece(b *testing.B) {
	data, m := benchBlob(b)
	s, err := Open(b.TempDir(), 1<<30, quiet())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.SetBytes(m.Size)
	for b.Loop() {
		if err := s.Create(m); err != nil {
			b.Fatal(err)
		}
		for i := range m.NumPieces() {
			if err := s.WritePiece(m.Digest, i, piece(data, m, i)); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Remove(m.Digest); err != nil {
			b.Fatal(err)
		}
	}
}
