package piecestore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// bigPieceBlob is a blob of 8 KiB pieces and a last one of 100 bytes.
func bigPieceBlob(t *testing.T, seed uint64) ([]byte, *metainfo.Metainfo) {
	t.Helper()
	data, _ := testBlob(t, seed, 10*8192+100)
	m, err := metainfo.Compute(bytes.NewReader(data), digest.FromBytes(data), int64(len(data)), 8192)
	if err != nil {
		t.Fatal(err)
	}
	return data, m
}

// handOver writes piece i through a buffer of the store's, as the swarm
// does.
func handOver(t *testing.T, s *Store, data []byte, m *metainfo.Metainfo, i int) error {
	t.Helper()
	buf := s.PieceBuffer(m.PieceSize(i))
	return s.WritePieceBuffer(m.Digest, i, append(buf, piece(data, m, i)...))
}

func (s *Store) blobForTest(t *testing.T, d digest.Digest) *blob {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	if !ok {
		t.Fatalf("%s not in the store", d)
	}
	return b
}

func TestHandedOverPiecesAreReadFromMemoryAndOnDisk(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20)
	data, m := bigPieceBlob(t, 21)
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	r, err := s.Reader(context.Background(), m.Digest, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0, len(data))
	buf := make([]byte, 3000) // reads cross piece boundaries
	for i := range m.NumPieces() {
		if err := handOver(t, s, data, m, i); err != nil {
			t.Fatalf("piece %d: %v", i, err)
		}
		// Every byte of the piece just written is readable, from memory.
		b := s.blobForTest(t, m.Digest)
		end := m.PieceOffset(i) + m.PieceSize(i)
		for r.Offset() < end {
			if _, ok := b.readRecent(buf[:1], r.Offset()); !ok {
				t.Fatalf("piece %d: offset %d is not among the recent pieces", i, r.Offset())
			}
			n, err := r.Read(buf)
			if err != nil {
				t.Fatalf("reading at %d: %v", r.Offset(), err)
			}
			got = append(got, buf[:n]...)
		}
		if n := len(b.recent.pieces); n > recentPerBlob {
			t.Fatalf("%d recent pieces, want at most %d", n, recentPerBlob)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("streamed bytes differ from the blob")
	}
	if err := s.Complete(m.Digest); err != nil {
		t.Fatal(err)
	}
	// The file holds the same bytes.
	final, _ := s.blobDir(m.Digest, true)
	onDisk, err := os.ReadFile(filepath.Join(final, dataFile))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("data file differs from the blob (err %v)", err)
	}
	if held := s.bufs.held.Load(); held == 0 {
		t.Fatal("no piece held in memory while a reader is open")
	}
	r.Close()
	// Complete and unused: the memory goes.
	if held := s.bufs.held.Load(); held != 0 {
		t.Fatalf("%d bytes still held in memory for a complete blob nobody reads", held)
	}
	if b := s.blobForTest(t, m.Digest); b.recent.pieces != nil {
		t.Fatal("complete, unused blob keeps its recent pieces")
	}
	r2, err := s.Reader(context.Background(), m.Digest, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if again, err := io.ReadAll(r2); err != nil || !bytes.Equal(again, data) {
		t.Fatalf("reading the complete blob from disk: %v", err)
	}
}

func TestHandedOverBadPieceIsNotKept(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20)
	data, m := bigPieceBlob(t, 22)
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	buf := append(s.PieceBuffer(m.PieceSize(3)), piece(data, m, 3)...)
	buf[17] ^= 1
	if err := s.WritePieceBuffer(m.Digest, 3, buf); !errors.Is(err, metainfo.ErrCorruptPiece) {
		t.Fatalf("WritePieceBuffer of a bad piece: %v, want ErrCorruptPiece", err)
	}
	if held := s.bufs.held.Load(); held != 0 {
		t.Fatalf("%d bytes of a rejected piece kept in memory", held)
	}
	if have, _ := s.Have(m.Digest); have.Count() != 0 {
		t.Fatal("a rejected piece was recorded")
	}
	// Handing over a piece already held keeps nothing either.
	if err := handOver(t, s, data, m, 3); err != nil {
		t.Fatal(err)
	}
	before := s.bufs.held.Load()
	if err := handOver(t, s, data, m, 3); err != nil {
		t.Fatal(err)
	}
	if held := s.bufs.held.Load(); held != before {
		t.Fatalf("held %d bytes after writing a piece again, want %d", held, before)
	}
}

func TestHandedOverPiecesSurviveReload(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20)
	data, m := bigPieceBlob(t, 24)
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 4, 9, 10} { // 10 is the 100-byte tail
		if err := handOver(t, s, data, m, i); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s2 := open(t, dir, 1<<20)
	have, err := s2.Have(m.Digest)
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.NumPieces() {
		want := i == 0 || i == 4 || i == 9 || i == 10
		if have.Has(i) != want {
			t.Fatalf("after reload piece %d held = %v, want %v", i, have.Has(i), want)
		}
	}
}

func TestCompleteWithoutDigestCheckTrustsVerifiedPieces(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20, WithoutDigestCheck())
	data, _ := testBlob(t, 25, 3*pieceLen)
	// Pieces hash right, the digest names other bytes: only the whole-blob
	// check notices, and it is off.
	wrong := *misnamed(t, data, "another blob")
	fill(t, s, data, &wrong)
	if err := s.Complete(wrong.Digest); err != nil {
		t.Fatalf("Complete without the digest check: %v", err)
	}
	if info, err := s.Stat(wrong.Digest); err != nil || !info.Complete {
		t.Fatalf("blob not complete: %+v, %v", info, err)
	}
}
