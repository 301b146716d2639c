package piecestore

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestOpenFileHasItsOwnPositionAndKeepsItsBlob(t *testing.T) {
	const size = 4 * pieceLen
	s := open(t, t.TempDir(), size)
	data, m := testBlob(t, 41, size-70)
	if _, err := s.OpenFile(digest.FromString("not held")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenFile of a blob not held: %v; want ErrNotFound", err)
	}
	fill(t, s, data, m)
	if _, err := s.OpenFile(m.Digest); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("OpenFile of a blob every piece of which is held but not completed: %v; want ErrIncomplete", err)
	}
	if err := s.Complete(m.Digest); err != nil {
		t.Fatal(err)
	}
	a, err := s.OpenFile(m.Digest)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.OpenFile(m.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != int64(len(data)) {
		t.Fatalf("BlobFile.Size %d; want %d", a.Size, len(data))
	}
	// Each sender moves only its own position: a sendfile(2) of one must
	// not shift what another, or the store's readers, read next.
	if _, err := a.File.Seek(pieceLen+5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 100)
	if _, err := io.ReadFull(b.File, head); err != nil || !bytes.Equal(head, data[:100]) {
		t.Fatalf("second file after the first was moved read %q (%v); want the blob's first 100 bytes", head[:8], err)
	}
	rest, err := io.ReadAll(a.File)
	if err != nil || !bytes.Equal(rest, data[pieceLen+5:]) {
		t.Fatalf("first file from %d read %d bytes (%v); want the blob's %d bytes from there", pieceLen+5, len(rest), err, len(data)-pieceLen-5)
	}
	if got := s.blobForTest(t, m.Digest).f; got == a.File || got == b.File {
		t.Fatal("OpenFile handed out the store's shared file")
	}
	// Open files pin the blob: a blob that needs the whole quota cannot
	// evict it until both are closed.
	_, other := testBlob(t, 42, size)
	a.Close()
	if err := s.Create(other); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("Create needing the room of a blob still being sent: %v; want ErrQuotaExceeded", err)
	}
	if _, err := b.File.Seek(0, io.SeekStart); err != nil {
		t.Fatalf("file still open after another was closed: %v", err)
	}
	b.Close()
	b.Close()
	if err := s.Create(other); err != nil {
		t.Fatalf("Create once every file was closed: %v; want the idle blob evicted", err)
	}
}
