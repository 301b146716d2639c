package piecestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

const pieceLen = 1024

// testBlob returns size random bytes and their metainfo with 1 KiB pieces.
func testBlob(t testing.TB, seed uint64, size int) ([]byte, *metainfo.Metainfo) {
	t.Helper()
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	m, err := metainfo.Compute(bytes.NewReader(data), digest.FromBytes(data), int64(size), pieceLen)
	if err != nil {
		t.Fatal(err)
	}
	return data, m
}

// misnamed returns per-piece metainfo of data under another blob's
// digest: its pieces verify, the assembled blob does not match. (Chained
// metainfo cannot say that: its last piece hash is its digest.)
func misnamed(t testing.TB, data []byte, other string) *metainfo.Metainfo {
	t.Helper()
	h, err := metainfo.NewHasher(metainfo.PerPiece, pieceLen)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = h.Write(data)
	m, err := h.Metainfo(digest.FromString(other))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func piece(data []byte, m *metainfo.Metainfo, i int) []byte {
	off := m.PieceOffset(i)
	return data[off : off+m.PieceSize(i)]
}

func quiet() Option { return WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))) }

func open(t *testing.T, dir string, quota int64, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, quota, append([]Option{quiet()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fill creates the blob and writes every piece, in a shuffled order.
func fill(t *testing.T, s *Store, data []byte, m *metainfo.Metainfo) {
	t.Helper()
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	for _, i := range rand.Perm(m.NumPieces()) {
		if err := s.WritePiece(m.Digest, i, piece(data, m, i)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWriteReadComplete(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20)
	data, m := testBlob(t, 1, 5*pieceLen+100)
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(m); err != nil {
		t.Fatalf("second Create of the same blob: %v", err)
	}
	if err := s.WritePiece(m.Digest, 2, piece(data, m, 2)); err != nil {
		t.Fatal(err)
	}
	if err := s.WritePiece(m.Digest, 5, piece(data, m, 5)); err != nil {
		t.Fatal(err)
	}
	have, _ := s.Have(m.Digest)
	if have.Count() != 2 || !have.Has(2) || !have.Has(5) {
		t.Fatalf("Have = %08b, want pieces 2 and 5", have.Bytes())
	}
	got, err := s.ReadPiece(m.Digest, 5)
	if err != nil || !bytes.Equal(got, piece(data, m, 5)) {
		t.Fatalf("ReadPiece(5) = %d bytes, %v; want the last piece (100 bytes)", len(got), err)
	}
	if _, err := s.ReadPiece(m.Digest, 0); !errors.Is(err, ErrPieceMissing) {
		t.Fatalf("ReadPiece of a piece not written: %v, want ErrPieceMissing", err)
	}
	if err := s.Complete(m.Digest); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Complete with 2 of 6 pieces: %v, want ErrIncomplete", err)
	}
	for i := range m.NumPieces() {
		if err := s.WritePiece(m.Digest, i, piece(data, m, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Complete(m.Digest); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(m.Digest); err != nil {
		t.Fatalf("Complete again: %v", err)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, "complete", "sha256", m.Digest.Encoded(), "data"))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("complete/ data file: %d bytes, %v; want the blob", len(onDisk), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "incomplete", "sha256", m.Digest.Encoded())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("incomplete/ directory still there after Complete: %v", err)
	}
	info, _ := s.Stat(m.Digest)
	if !info.Complete || info.Held != 6 || info.Pieces != 6 || info.Size != int64(len(data)) || info.InUse != 0 {
		t.Fatalf("Stat = %+v", info)
	}
	if s.Used() != int64(len(data)) {
		t.Fatalf("Used() = %d, want %d", s.Used(), len(data))
	}
	r, _ := s.Reader(context.Background(), m.Digest, 0)
	all, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("reading the complete blob: %d bytes, %v", len(all), err)
	}
}

func TestCorruptPieceRejected(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20)
	data, m := testBlob(t, 2, 3*pieceLen)
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(piece(data, m, 1))
	bad[7] ^= 1
	for name, p := range map[string][]byte{
		"flipped bit":       bad,
		"short":             piece(data, m, 1)[:pieceLen-1],
		"another piece":     piece(data, m, 0),
		"out of range (-1)": nil,
	} {
		i := 1
		if p == nil {
			i = -1
		}
		if err := s.WritePiece(m.Digest, i, p); err == nil {
			t.Errorf("WritePiece with %s: accepted", name)
		} else if p != nil && !errors.Is(err, metainfo.ErrCorruptPiece) {
			t.Errorf("WritePiece with %s: %v, want ErrCorruptPiece", name, err)
		}
	}
	if have, _ := s.Have(m.Digest); have.Count() != 0 {
		t.Fatalf("a rejected piece was recorded: %08b", have.Bytes())
	}
	if err := s.WritePiece(digest.FromString("x"), 0, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("WritePiece to an unknown blob: %v, want ErrNotFound", err)
	}
}

// A piece hashed by its receiver is checked against the metainfo by its
// hash and size: a receiver that hashed the wrong bytes, or against another
// metainfo, cannot get a bad piece stored.
func TestVerifiedPieceIsCheckedAgainstTheMetainfo(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20)
	data, m := testBlob(t, 3, 3*pieceLen)
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(piece(data, m, 1))
	bad[7] ^= 1
	for _, c := range []struct {
		name string
		i    int
		data []byte
		sum  [metainfo.HashSize]byte
	}{
		{"corrupt bytes with their own hash", 1, bad, sha256.Sum256(bad)},
		{"another piece's bytes and hash", 1, piece(data, m, 0), m.PieceHashes[0]},
		{"the right hash with a short piece", 1, piece(data, m, 1)[:pieceLen-1], m.PieceHashes[1]},
		{"the right hash, out of range", 3, piece(data, m, 1), m.PieceHashes[1]},
	} {
		buf := append(s.PieceBuffer(int64(len(c.data))), c.data...)
		err := s.WriteVerifiedPiece(m.Digest, c.i, buf, c.sum)
		if err == nil {
			t.Errorf("WriteVerifiedPiece with %s: accepted", c.name)
		} else if c.i < m.NumPieces() && !errors.Is(err, metainfo.ErrCorruptPiece) {
			t.Errorf("WriteVerifiedPiece with %s: %v, want ErrCorruptPiece", c.name, err)
		}
	}
	if have, _ := s.Have(m.Digest); have.Count() != 0 {
		t.Fatalf("a rejected piece was recorded: %08b", have.Bytes())
	}
	for i := range m.NumPieces() {
		buf := append(s.PieceBuffer(m.PieceSize(i)), piece(data, m, i)...)
		if err := s.WriteVerifiedPiece(m.Digest, i, buf, m.PieceHashes[i]); err != nil {
			t.Fatalf("WriteVerifiedPiece of piece %d with its hash: %v", i, err)
		}
	}
	if err := s.Complete(m.Digest); err != nil {
		t.Fatalf("completing a blob written with WriteVerifiedPiece: %v", err)
	}
}

func TestCompleteDropsBlobNotMatchingDigest(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20)
	data, _ := testBlob(t, 3, 2*pieceLen)
	// Pieces hash right but the digest names other bytes: a wrong metainfo.
	wrong := *misnamed(t, data, "something else")
	fill(t, s, data, &wrong)
	r, _ := s.Reader(context.Background(), wrong.Digest, 0)
	defer r.Close()
	if err := s.Complete(wrong.Digest); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Complete: %v, want ErrDigestMismatch", err)
	}
	if _, err := s.Stat(wrong.Digest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("blob still held after a digest mismatch: %v", err)
	}
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, ErrRemoved) {
		t.Fatalf("reader of a dropped blob: %v, want ErrRemoved", err)
	}
	if s.Used() != 0 {
		t.Fatalf("Used() = %d after the drop, want 0", s.Used())
	}
}

func TestCreateRejectsDifferentMetainfo(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20)
	data, m := testBlob(t, 4, 4*pieceLen)
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	other, err := metainfo.Compute(bytes.NewReader(data), m.Digest, m.Size, 2*pieceLen)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(other); !errors.Is(err, ErrMetainfoMismatch) {
		t.Fatalf("Create with another piece length: %v, want ErrMetainfoMismatch", err)
	}
}

// TestReaderStreamsInOrder writes the pieces backwards, each once the
// reader waits (synctest.Wait in a bubble, so every run, not as a sleep
// makes likely); the reader must block until the piece at its offset
// arrives, and never return a byte of a piece before it was written.
func TestReaderStreamsInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := open(t, t.TempDir(), 1<<20)
		data, m := testBlob(t, 5, 8*pieceLen+10)
		if err := s.Create(m); err != nil {
			t.Fatal(err)
		}
		const start = pieceLen + 300 // mid-piece
		r, err := s.Reader(context.Background(), m.Digest, start)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()

		var mu sync.Mutex
		written := map[int]bool{}
		writerDone := make(chan struct{})
		defer func() { <-writerDone }()
		go func() {
			defer close(writerDone)
			for i := m.NumPieces() - 1; i >= 0; i-- {
				synctest.Wait() // the reader has read what there is and waits for more
				mu.Lock()
				written[i] = true // before the write: a reader may see it at once
				mu.Unlock()
				if err := s.WritePiece(m.Digest, i, piece(data, m, i)); err != nil {
					t.Error(err)
				}
			}
		}()
		var got []byte
		buf := make([]byte, 700)
		for {
			off := r.Offset()
			n, err := r.Read(buf)
			if n > 0 {
				mu.Lock()
				for i := int(off / pieceLen); i <= int((off+int64(n)-1)/pieceLen); i++ {
					if !written[i] {
						t.Fatalf("Read returned bytes of piece %d before it was written", i)
					}
				}
				mu.Unlock()
			}
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, data[start:]) {
			t.Fatalf("streamed %d bytes, want the blob from %d (%d bytes)", len(got), start, len(data)-start)
		}
	})
}

// A reader waiting for a piece that will not come ends with the
// cancellation of its context, or with ErrRemoved when its blob goes. The
// test runs in a synctest bubble so that synctest.Wait can tell when the
// reading goroutine is blocked: the cancel and the removal reach a reader
// that waits, every run, not one that has not started yet.
func TestReaderCancelAndRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := open(t, t.TempDir(), 1<<20)
		_, m := testBlob(t, 6, 2*pieceLen)
		if err := s.Create(m); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r, _ := s.Reader(ctx, m.Digest, 0)
		errc := make(chan error, 1)
		go func() { _, err := r.Read(make([]byte, 10)); errc <- err }()
		synctest.Wait() // the reader is blocked waiting for a piece
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Read after cancel: %v, want context.Canceled", err)
		}
		r.Close()

		r, _ = s.Reader(context.Background(), m.Digest, 0)
		defer r.Close()
		go func() { _, err := r.Read(make([]byte, 10)); errc <- err }()
		synctest.Wait() // the reader is blocked waiting for a piece
		if err := s.Remove(m.Digest); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, ErrRemoved) {
				t.Fatalf("Read of a removed blob: %v, want ErrRemoved", err)
			}
		case <-time.After(time.Minute): // the bubble's clock: fires at once if the reader never wakes
			t.Fatal("a waiting reader did not wake when its blob was removed")
		}
		if _, err := s.Reader(context.Background(), m.Digest, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Reader of a removed blob: %v, want ErrNotFound", err)
		}
		if _, err := s.Reader(context.Background(), digest.FromString("x"), 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Reader of an unknown blob: %v", err)
		}
	})
}

func TestEvictionOrder(t *testing.T) {
	var evicted []digest.Digest
	var mu sync.Mutex
	const size = 4 * pieceLen
	s := open(t, t.TempDir(), 4*size, WithOnEvict(func(d digest.Digest) {
		mu.Lock()
		evicted = append(evicted, d)
		mu.Unlock()
	}))
	blobs := make([]*metainfo.Metainfo, 8)
	datas := make([][]byte, 8)
	for i := range blobs {
		datas[i], blobs[i] = testBlob(t, uint64(100+i), size)
	}
	// a, b, c complete; d incomplete and not in use.
	for _, i := range []int{0, 1, 2} {
		fill(t, s, datas[i], blobs[i])
		if err := s.Complete(blobs[i].Digest); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Create(blobs[3]); err != nil {
		t.Fatal(err)
	}
	// Use a (seeding a piece) so b is the least recently used complete one.
	if _, err := s.ReadPiece(blobs[0].Digest, 0); err != nil {
		t.Fatal(err)
	}
	// A reader keeps c from eviction however old.
	rc, _ := s.Reader(context.Background(), blobs[2].Digest, 0)

	want := func(step string, ds ...int) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		var w []digest.Digest
		for _, i := range ds {
			w = append(w, blobs[i].Digest)
		}
		if !slices.Equal(evicted, w) {
			t.Fatalf("%s: evicted %v, want %v", step, evicted, w)
		}
	}
	if err := s.Create(blobs[4]); err != nil {
		t.Fatal(err)
	}
	want("fifth blob", 1) // b: complete, least recently used, not in use
	if err := s.Create(blobs[5]); err != nil {
		t.Fatal(err)
	}
	want("sixth blob", 1, 0) // a: the other idle complete one (c is being read)
	release, err := s.Acquire(blobs[5].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(blobs[6]); err != nil {
		t.Fatal(err)
	}
	want("seventh blob", 1, 0, 3) // d, e: idle incomplete, d older; f is acquired
	if err := s.Create(blobs[7]); err != nil {
		t.Fatal(err)
	}
	want("eighth blob", 1, 0, 3, 4)
	// Now c (reader), f (acquired), g, h fill the quota; g and h are idle.
	release()
	rc.Close()
	big := &metainfo.Metainfo{Digest: digest.FromString("big"), Size: 5 * size, PieceLength: pieceLen,
		PieceHashes: make([][32]byte, 5*size/pieceLen)}
	if err := s.Create(big); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("Create of a blob larger than the quota: %v, want ErrQuotaExceeded", err)
	}
	want("too big", 1, 0, 3, 4) // nothing evicted for a blob that cannot fit
	if s.Used() != 4*size {
		t.Fatalf("Used() = %d, want %d", s.Used(), 4*size)
	}
	// Every remaining blob in use: no room.
	var rels []func()
	for _, i := range []int{2, 5, 6, 7} {
		rel, err := s.Acquire(blobs[i].Digest)
		if err != nil {
			t.Fatal(err)
		}
		rels = append(rels, rel)
	}
	if err := s.Create(blobs[1]); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("Create with every blob in use: %v, want ErrQuotaExceeded", err)
	}
	for _, rel := range rels {
		rel()
	}
	if err := s.Create(blobs[1]); err != nil {
		t.Fatalf("Create once blobs are released: %v", err)
	}
	want("after release", 1, 0, 3, 4, 2) // c is the one complete blob, evicted first
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 1<<20, quiet())
	if err != nil {
		t.Fatal(err)
	}
	dataA, a := testBlob(t, 10, 3*pieceLen)
	fill(t, s, dataA, a)
	if err := s.Complete(a.Digest); err != nil {
		t.Fatal(err)
	}
	dataB, b := testBlob(t, 11, 6*pieceLen)
	if err := s.Create(b); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2, 3, 5} {
		if err := s.WritePiece(b.Digest, i, piece(dataB, b, i)); err != nil {
			t.Fatal(err)
		}
	}
	dataC, c := testBlob(t, 12, 2*pieceLen)
	fill(t, s, dataC, c)
	if err := s.Complete(c.Digest); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Damage: piece 3 of b overwritten on disk (its bit still set), c's data
	// truncated, and junk where blobs live.
	incB := filepath.Join(dir, "incomplete", "sha256", b.Digest.Encoded())
	f, err := os.OpenFile(filepath.Join(incB, "data"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("garbage"), 3*pieceLen+10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	compC := filepath.Join(dir, "complete", "sha256", c.Digest.Encoded())
	if err := os.Truncate(filepath.Join(compC, "data"), 100); err != nil {
		t.Fatal(err)
	}
	junk := []string{
		filepath.Join(dir, "complete", "sha256", "not-hex"),
		filepath.Join(dir, "incomplete", "sha256", digest.FromString("no metainfo").Encoded()),
		filepath.Join(dir, "incomplete", "md5"),
	}
	for _, j := range junk {
		if err := os.MkdirAll(j, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	s = open(t, dir, 1<<20)
	info, err := s.Stat(a.Digest)
	if err != nil || !info.Complete {
		t.Fatalf("complete blob after restart: %+v, %v", info, err)
	}
	r, _ := s.Reader(context.Background(), a.Digest, 0)
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, dataA) {
		t.Fatalf("reading the reloaded complete blob: %d bytes, %v", len(got), err)
	}
	have, err := s.Have(b.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 2, 5}; have.Count() != len(want) || !have.Has(0) || !have.Has(2) || !have.Has(5) {
		t.Fatalf("incomplete blob after restart holds %08b, want pieces %v (3 was damaged)", have.Bytes(), want)
	}
	if _, err := s.Stat(c.Digest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("blob with a truncated data file kept after restart: %v", err)
	}
	for _, p := range append(junk, compC) {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after restart: %v", p, err)
		}
	}
	if want := a.Size + b.Size; s.Used() != want {
		t.Fatalf("Used() = %d after restart, want %d", s.Used(), want)
	}
	// The download resumes where it stopped.
	for _, i := range []int{1, 3, 4} {
		if err := s.WritePiece(b.Digest, i, piece(dataB, b, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Complete(b.Digest); err != nil {
		t.Fatal(err)
	}
	// And the rewritten bitfield survives another restart.
	s.Close()
	s = open(t, dir, 1<<20)
	if info, err := s.Stat(b.Digest); err != nil || !info.Complete {
		t.Fatalf("blob completed after the first restart: %+v, %v", info, err)
	}
}

func TestRestartEvictsOverQuota(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, 1<<20, quiet())
	for i := range 3 {
		data, m := testBlob(t, uint64(20+i), 4*pieceLen)
		fill(t, s, data, m)
		if err := s.Complete(m.Digest); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = open(t, dir, 8*pieceLen)
	if n := len(s.List()); n != 2 || s.Used() != 8*pieceLen {
		t.Fatalf("reopened with a smaller quota: %d blobs, %d bytes; want 2, %d", n, s.Used(), 8*pieceLen)
	}
}

// TestConcurrentWritersAndReaders: several writers deliver the pieces of
// two blobs in random orders, with duplicates, while readers stream them
// from various offsets. Run with -race.
func TestConcurrentWritersAndReaders(t *testing.T) {
	s := open(t, t.TempDir(), 1<<22)
	type tb struct {
		data []byte
		m    *metainfo.Metainfo
	}
	var bs []tb
	for i := range 2 {
		data, m := testBlob(t, uint64(30+i), 40*pieceLen+333)
		bs = append(bs, tb{data, m})
	}
	var wg sync.WaitGroup
	for _, b := range bs {
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Create(b.m); err != nil {
					t.Error(err)
					return
				}
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				for _, i := range rng.Perm(b.m.NumPieces()) {
					if err := s.WritePiece(b.m.Digest, i, piece(b.data, b.m, i)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	// Readers start once the blobs exist.
	for _, b := range bs {
		for k := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var r *Reader
				var err error
				// Another goroutine creates the blob: until then, not found.
				if werr := eventually.Wait(eventually.Timeout, func() bool {
					r, err = s.Reader(context.Background(), b.m.Digest, int64(k)*7777)
					return !errors.Is(err, ErrNotFound)
				}); werr != nil {
					t.Errorf("waiting for a reader of %s from %d: %v; last error %v", b.m.Digest, k*7777, werr, err)
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				defer r.Close()
				got, err := io.ReadAll(r)
				if err != nil || !bytes.Equal(got, b.data[k*7777:]) {
					t.Errorf("reader from %d: %d bytes, %v", k*7777, len(got), err)
				}
			}()
		}
	}
	wg.Wait()
	for _, b := range bs {
		if err := s.Complete(b.m.Digest); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.List()) != 2 {
		t.Fatalf("List() = %v, want 2 blobs", s.List())
	}
}

func TestEmptyBlob(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20)
	m, err := metainfo.Compute(bytes.NewReader(nil), digest.FromBytes(nil), 0, pieceLen)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(m.Digest); err != nil {
		t.Fatal(err)
	}
	r, _ := s.Reader(context.Background(), m.Digest, 0)
	defer r.Close()
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read of an empty blob: %d, %v; want 0, EOF", n, err)
	}
}

func TestPieceSectionPlacesAHeldPieceAndKeepsItsBlob(t *testing.T) {
	const size = 4 * pieceLen
	s := open(t, t.TempDir(), size)
	data, m := testBlob(t, 31, size-50)
	if err := s.Create(m); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PieceSection(m.Digest, 3); !errors.Is(err, ErrPieceMissing) {
		t.Fatalf("PieceSection of a piece not written: %v; want ErrPieceMissing", err)
	}
	if _, err := s.PieceSection(digest.FromString("not held"), 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PieceSection of a blob not held: %v; want ErrNotFound", err)
	}
	fill(t, s, data, m)
	if err := s.Complete(m.Digest); err != nil {
		t.Fatal(err)
	}
	sec, err := s.PieceSection(m.Digest, 3)
	if err != nil {
		t.Fatal(err)
	}
	// A blob that needs the whole quota cannot evict the one a section
	// holds, and the section's file stays readable.
	_, other := testBlob(t, 32, size)
	if err := s.Create(other); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("Create needing the room of a blob whose piece is being sent: %v; want ErrQuotaExceeded", err)
	}
	got := make([]byte, sec.Size)
	if _, err := sec.File.ReadAt(got, sec.Offset); err != nil || !bytes.Equal(got, piece(data, m, 3)) {
		t.Fatalf("section of piece 3: %d bytes at %d (%v); want the piece's %d bytes", sec.Size, sec.Offset, err, len(piece(data, m, 3)))
	}
	sec.Release()
	sec.Release()
	if err := s.Create(other); err != nil {
		t.Fatalf("Create once the section was released: %v; want the idle blob evicted", err)
	}
}
