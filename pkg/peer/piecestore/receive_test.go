package piecestore

import (
	"bytes"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// writeInSteps writes p to w in steps of step bytes.
func writeInSteps(t *testing.T, w *PieceWriter, p []byte, step int) {
	t.Helper()
	for off := 0; off < len(p); off += step {
		if _, err := w.Write(p[off:min(off+step, len(p))]); err != nil {
			t.Fatalf("writing at %d: %v", off, err)
		}
	}
}

// pieceSum is the hash of p as piece i of m, as a receiver computes it.
func pieceSum(t *testing.T, m *metainfo.Metainfo, i int, p []byte) [metainfo.HashSize]byte {
	t.Helper()
	pd, err := m.PieceDigester(i)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = pd.Write(p)
	return pd.Sum()
}

// receive receives p as piece i of m in steps, and commits it with the
// hash of p.
func receive(t *testing.T, s *Store, m *metainfo.Metainfo, i int, p []byte, step int) error {
	t.Helper()
	w, err := s.StartPiece(m.Digest, i)
	if err != nil {
		t.Fatalf("receiving piece %d: %v", i, err)
	}
	writeInSteps(t, w, p, step)
	return w.Commit(pieceSum(t, m, i, p))
}

func TestReceivedPieceIsInvisibleUntilCommitted(t *testing.T) {
	s, data, m := createdBlob(t, 11, 3*pieceLen+10)
	p := piece(data, m, 1)
	w, err := s.StartPiece(m.Digest, 1)
	if err != nil {
		t.Fatal(err)
	}
	writeInSteps(t, w, p, 100)
	if _, err := s.ReadPiece(m.Digest, 1); !errors.Is(err, ErrPieceMissing) {
		t.Fatalf("reading a piece written and not committed: %v; want ErrPieceMissing", err)
	}
	if have, _ := s.Have(m.Digest); have.Has(1) {
		t.Fatal("a piece written and not committed is held")
	}
	if err := w.Commit(pieceSum(t, m, 1, p)); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadPiece(m.Digest, 1)
	if err != nil || !bytes.Equal(got, p) {
		t.Fatalf("reading the committed piece: %v, equal %v", err, bytes.Equal(got, p))
	}
	if _, err := s.StartPiece(m.Digest, 1); !errors.Is(err, ErrPieceBusy) {
		t.Fatalf("receiving a held piece: %v; want ErrPieceBusy", err)
	}
	if _, err := w.Write(p[:1]); err == nil {
		t.Fatal("writing to a committed PieceWriter succeeded")
	}
}

func TestReceivedPieceThatDoesNotVerifyIsNotHeld(t *testing.T) {
	s, data, m := createdBlob(t, 12, 3*pieceLen)
	p := piece(data, m, 0)
	for _, c := range []struct {
		name  string
		bytes []byte
	}{{"short", p[:len(p)-1]}, {"other bytes", piece(data, m, 1)}} {
		if err := receive(t, s, m, 0, c.bytes, 300); !errors.Is(err, metainfo.ErrCorruptPiece) {
			t.Fatalf("%s: Commit: %v; want ErrCorruptPiece", c.name, err)
		}
		if have, _ := s.Have(m.Digest); have.Has(0) {
			t.Fatalf("%s: held after a Commit that failed", c.name)
		}
	}
	w, err := s.StartPiece(m.Digest, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(append(bytes.Clone(p), 0)); !errors.Is(err, metainfo.ErrCorruptPiece) {
		t.Fatalf("writing past the piece: %v; want ErrCorruptPiece", err)
	}
	w.Abort()
	if err := receive(t, s, m, 0, p, len(p)); err != nil {
		t.Fatalf("receiving the piece after an Abort: %v", err)
	}
}

func TestOnePieceWriterAtATime(t *testing.T) {
	s, data, m := createdBlob(t, 13, 3*pieceLen)
	w, err := s.StartPiece(m.Digest, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartPiece(m.Digest, 2); !errors.Is(err, ErrPieceBusy) {
		t.Fatalf("a second writer of a piece being received: %v; want ErrPieceBusy", err)
	}
	if w2, err := s.StartPiece(m.Digest, 1); err != nil {
		t.Fatalf("a writer of another piece: %v", err)
	} else {
		w2.Abort()
	}
	w.Abort()
	if err := receive(t, s, m, 2, piece(data, m, 2), 1000); err != nil {
		t.Fatalf("a writer after the first aborted: %v", err)
	}
}

// A piece verified whole in a buffer is written over a PieceWriter's
// piece in progress: the writer's later bytes, which could be anything,
// must not land on it.
func TestVerifiedBufferTakesOverAPieceBeingReceived(t *testing.T) {
	s, data, m := createdBlob(t, 14, 3*pieceLen)
	p := piece(data, m, 1)
	w, err := s.StartPiece(m.Digest, 1)
	if err != nil {
		t.Fatal(err)
	}
	garbage := bytes.Repeat([]byte{0xee}, len(p))
	writeInSteps(t, w, garbage[:len(p)/2], 100)
	if err := s.WritePiece(m.Digest, 1, bytes.Clone(p)); err != nil {
		t.Fatal(err)
	}
	writeInSteps(t, w, garbage[len(p)/2:], 100)
	if err := w.Commit(pieceSum(t, m, 1, garbage)); !errors.Is(err, metainfo.ErrCorruptPiece) {
		t.Fatalf("committing the garbage: %v; want ErrCorruptPiece", err)
	}
	got, err := s.ReadPiece(m.Digest, 1)
	if err != nil || !bytes.Equal(got, p) {
		t.Fatalf("reading the piece written from the buffer: %v; equal %v", err, bytes.Equal(got, p))
	}

	// A writer taken over that received the right bytes commits without
	// an error: the piece is held.
	w, err = s.StartPiece(m.Digest, 2)
	if err != nil {
		t.Fatal(err)
	}
	p = piece(data, m, 2)
	writeInSteps(t, w, p[:10], 10)
	if err := s.WriteVerifiedPiece(m.Digest, 2, bytes.Clone(p), pieceSum(t, m, 2, p)); err != nil {
		t.Fatal(err)
	}
	writeInSteps(t, w, p[10:], 100)
	if err := w.Commit(pieceSum(t, m, 2, p)); err != nil {
		t.Fatalf("committing a piece taken over: %v", err)
	}
}

func TestPieceWriterKeepsItsBlob(t *testing.T) {
	s, data, m := createdBlob(t, 15, 2*pieceLen)
	w, err := s.StartPiece(m.Digest, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The blob is in use: making room for another does not evict it.
	_, other := testBlob(t, 16, 1<<20-pieceLen)
	if err := s.Create(other); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("creating a blob that needs the receiving one's room: %v; want ErrQuotaExceeded", err)
	}
	p := piece(data, m, 0)
	writeInSteps(t, w, p, 512)
	if err := w.Commit(pieceSum(t, m, 0, p)); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(other); err != nil {
		t.Fatalf("creating the other blob once the piece was received: %v", err)
	}
}

// A writer taken over commits once the buffer that took over is written,
// not before: the piece is the receiver's then.
func TestPieceTakenOverIsCommittedOnceTheBufferIsWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, data, m := createdBlob(t, 17, 3*pieceLen)
		p := piece(data, m, 1)
		w, err := s.StartPiece(m.Digest, 1)
		if err != nil {
			t.Fatal(err)
		}
		writeInSteps(t, w, p[:100], 100)
		// A verified buffer's write begins, as writePiece's does.
		b := s.blobForTest(t, m.Digest)
		s.mu.Lock()
		s.claimLocked(b, 1).buffered++
		s.mu.Unlock()
		writeInSteps(t, w, p[100:], 100)
		errc := make(chan error, 1)
		go func() { errc <- w.Commit(pieceSum(t, m, 1, p)) }()
		synctest.Wait()
		select {
		case err := <-errc:
			t.Fatalf("Commit returned (%v) while the buffer that took over was being written", err)
		default:
		}
		if _, err := b.f.WriteAt(p, m.PieceOffset(1)); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		s.unclaimLocked(b, 1, nil)
		if _, err := b.holdLocked(m.Digest, 1); err != nil {
			t.Fatal(err)
		}
		s.mu.Unlock()
		if err := <-errc; err != nil {
			t.Fatalf("Commit of a piece taken over, once the buffer is written: %v", err)
		}
	})
}

// A piece of the piece data path that came in a buffer (another
// connection was writing it) is read from the file, its buffer recycled:
// kept among the recent pieces, such buffers would stay for the whole
// download.
func TestVerifiedPieceBufferIsNotKept(t *testing.T) {
	s, data, m := createdBlob(t, 18, 6*pieceLen)
	for i := range m.NumPieces() {
		p := piece(data, m, i)
		buf := append(s.PieceBuffer(int64(len(p))), p...)
		if err := s.WriteVerifiedPiece(m.Digest, i, buf, pieceSum(t, m, i, p)); err != nil {
			t.Fatal(err)
		}
		got, err := s.ReadPiece(m.Digest, i)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("piece %d: %v, equal %v", i, err, bytes.Equal(got, p))
		}
	}
	b := s.blobForTest(t, m.Digest)
	b.recent.mu.Lock()
	n := len(b.recent.pieces)
	b.recent.mu.Unlock()
	if n != 0 || s.bufs.held.Load() != 0 {
		t.Fatalf("%d pieces, %d bytes kept in memory; want none", n, s.bufs.held.Load())
	}
}

// createdBlob opens a store of 1 MiB and creates in it a blob of size
// random bytes (from seed), returning the store, the bytes and the
// metainfo.
func createdBlob(t *testing.T, seed uint64, size int) (*Store, []byte, *metainfo.Metainfo) {
	t.Helper()
	s := open(t, t.TempDir(), 1<<20)
	data, m := testBlob(t, seed, size)
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	return s, data, m
}
