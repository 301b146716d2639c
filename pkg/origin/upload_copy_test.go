package origin

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// shortReads returns data in reads of random sizes, as a network does, and
// counts the bytes it gave.
type shortReads struct {
	data []byte
	rng  *rand.Rand
	read atomic.Int64
	// failAt makes the read that would pass this offset fail with err.
	failAt int
	err    error
}

func (r *shortReads) Read(p []byte) (int, error) {
	off := int(r.read.Load())
	if off == len(r.data) {
		return 0, io.EOF
	}
	n := min(len(p), len(r.data)-off, 1+r.rng.IntN(300<<10))
	if r.err != nil && off+n > r.failAt {
		n = r.failAt - off
		r.read.Add(int64(n))
		copy(p, r.data[off:off+n])
		return n, r.err
	}
	copy(p, r.data[off:off+n])
	r.read.Add(int64(n))
	return n, nil
}

// failingWriter takes limit bytes, then fails.
type failingWriter struct {
	bytes.Buffer
	limit int
	err   error
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.Len()+len(p) > w.limit {
		n, _ := w.Buffer.Write(p[:w.limit-w.Len()])
		return n, w.err
	}
	return w.Buffer.Write(p)
}

func randomBlob(t *testing.T, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{7})
	_, _ = rng.Read(b)
	return b
}

// Every byte reaches the store writer, the upload's digest and its piece
// hashes, in order, whatever sizes the body's reads have and however many
// buffers the chunk spans: through a chained piece hasher that is the
// upload's SHA-256 (one pass), or a per-piece one beside it.
func TestCopyChunkFeedsStoreDigestAndPiecesInOrder(t *testing.T) {
	for _, tc := range []struct {
		size   int
		scheme metainfo.Scheme
	}{
		{1, metainfo.Chained}, {1 << 20, metainfo.Chained}, {3*metainfo.DefaultPieceLength + 12345, metainfo.Chained},
		{(chunkBuffers+3)<<20 + 1, metainfo.Chained}, {3*metainfo.DefaultPieceLength + 12345, metainfo.PerPiece},
	} {
		size := tc.size
		data := randomBlob(t, size)
		var store bytes.Buffer
		pieces, err := metainfo.NewHasher(tc.scheme, metainfo.DefaultPieceLength)
		if err != nil {
			t.Fatal(err)
		}
		h := chainedHash(pieces)
		if h == nil {
			h = sha256.New()
		}
		hw, side := chunkHashers(h, pieces)
		if (side == nil) != (tc.scheme == metainfo.Chained) {
			t.Fatalf("%s: a second hash pass beside the upload's: %t", tc.scheme, side != nil)
		}
		n, err := copyChunk(&store, hw, side, &shortReads{data: data, rng: rand.New(rand.NewPCG(1, uint64(size)))})
		if err != nil || n != int64(size) {
			t.Fatalf("%d bytes: copyChunk stored %d bytes, err %v; want all of them, no error", size, n, err)
		}
		if !bytes.Equal(store.Bytes(), data) {
			t.Errorf("%d bytes: the store got other bytes than the body's (%d bytes)", size, store.Len())
		}
		if got, want := digest.NewDigest(digest.SHA256, h), digest.FromBytes(data); got != want {
			t.Errorf("%d bytes: upload digest %s, want %s", size, got, want)
		}
		d := digest.FromBytes(data)
		got, err := pieces.Metainfo(d)
		if err != nil {
			t.Fatal(err)
		}
		want, err := metainfo.Compute(bytes.NewReader(data), d, int64(size), metainfo.DefaultPieceLength)
		if err != nil {
			t.Fatal(err)
		}
		if tc.scheme == metainfo.Chained && (got.Scheme != want.Scheme || !slices.Equal(got.PieceHashes, want.PieceHashes)) {
			t.Errorf("%d bytes: piece hashes differ from the blob's (%d pieces hashed, %d in the blob)", size, got.NumPieces(), want.NumPieces())
		}
		for i := range got.NumPieces() {
			if err := got.Verify(i, data[got.PieceOffset(i):got.PieceOffset(i)+got.PieceSize(i)]); err != nil {
				t.Fatalf("%s, %d bytes: %v", tc.scheme, size, err)
			}
		}
	}
}

func TestCopyChunkWithoutPieces(t *testing.T) {
	data := randomBlob(t, 2<<20+5)
	var store bytes.Buffer
	n, err := copyChunk(&store, sha256.New(), nil, bytes.NewReader(data))
	if err != nil || n != int64(len(data)) || !bytes.Equal(store.Bytes(), data) {
		t.Fatalf("without a piece hasher: stored %d of %d bytes (equal: %t), err %v", n, len(data), bytes.Equal(store.Bytes(), data), err)
	}
}

// A store that fails stops the copy: its error comes back, with the bytes
// it took, and the body is not read to its end (a client is not made to
// send a layer the origin cannot store).
func TestCopyChunkStopsAtAStoreFailure(t *testing.T) {
	data := randomBlob(t, (4*chunkBuffers)<<20)
	errStore := errors.New("store failed")
	store := &failingWriter{limit: 3<<20 + 7, err: errStore}
	src := &shortReads{data: data, rng: rand.New(rand.NewPCG(3, 4))}
	pieces, _ := metainfo.NewHasher(metainfo.PerPiece, metainfo.DefaultPieceLength)
	n, err := copyChunk(store, sha256.New(), pieces, src)
	if !errors.Is(err, errStore) {
		t.Fatalf("copyChunk returned %v, want the store's error", err)
	}
	if n != int64(store.limit) {
		t.Errorf("copyChunk says the store took %d bytes; it took %d", n, store.limit)
	}
	// The reader may be ahead of the store by the buffers in flight and
	// the one it was filling.
	if most := int64(store.limit) + (chunkBuffers+2)<<20; src.read.Load() > most {
		t.Errorf("the body was read to %d bytes after the store failed at %d; at most %d (the buffers in flight) should be", src.read.Load(), store.limit, most)
	}
}

// A body that fails mid-way returns its error; what was read before it
// was stored (the caller throws the chunk away in any case).
func TestCopyChunkReturnsABodyFailure(t *testing.T) {
	data := randomBlob(t, 5<<20)
	errBody := errors.New("client went away")
	src := &shortReads{data: data, rng: rand.New(rand.NewPCG(5, 6)), failAt: 2<<20 + 3, err: errBody}
	var store bytes.Buffer
	n, err := copyChunk(&store, sha256.New(), nil, src)
	if !errors.Is(err, errBody) {
		t.Fatalf("copyChunk returned %v, want the body's error", err)
	}
	if n != int64(src.failAt) || !bytes.Equal(store.Bytes(), data[:src.failAt]) {
		t.Errorf("before the body failed at %d, the store took %d bytes (equal to the body's: %t)", src.failAt, n, bytes.Equal(store.Bytes(), data[:n]))
	}
}

type panickingWriter struct{}

func (panickingWriter) Write([]byte) (int, error) { panic("driver bug") }

// A store writer that panics fails the chunk, as it did when it ran on the
// request's goroutine (where net/http recovers), instead of the origin.
func TestCopyChunkTurnsAStoreWriterPanicIntoAnError(t *testing.T) {
	data := randomBlob(t, 3<<20)
	n, err := copyChunk(panickingWriter{}, sha256.New(), nil, bytes.NewReader(data))
	if err == nil || n != 0 {
		t.Fatalf("copyChunk through a panicking writer returned %d bytes, err %v; want 0 bytes and an error", n, err)
	}
}

// TestCopyChunkStoresATrickleAsItComes: the bytes of a client that sends
// slowly reach the store writer while the chunk is still arriving, not
// once a whole buffer has filled (the origin stores the part as it goes,
// and a chunk in flight when it is asked to stop is partly stored).
func TestCopyChunkStoresATrickleAsItComes(t *testing.T) {
	pr, pw := io.Pipe()
	stored := make(chan int, 16)
	store := writerFunc(func(p []byte) (int, error) {
		stored <- len(p)
		return len(p), nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := copyChunk(store, sha256.New(), nil, pr)
		done <- err
	}()
	for i := range 3 {
		if _, err := pw.Write(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		// The next bytes are sent only once these reached the store.
		select {
		case n := <-stored:
			if n != 1000 {
				t.Fatalf("write %d: the store writer got %d bytes; want the 1000 sent", i, n)
			}
		case <-time.After(eventually.Timeout):
			t.Fatalf("write %d: 1000 bytes sent, none reached the store writer within %s", i, eventually.Timeout)
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
