package inmemory

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/largestream"
)

// TestMain runs the reference suite in short mode, without its 5 GiB
// stream, which runs alone with SHOAL_LARGE_STREAM=1 (make large-streams;
// pkg/storage/internal/largestream). Short mode streams 10 MiB instead of
// 128 MiB to concurrent readers.
func TestMain(m *testing.M) {
	flag.Parse()
	if err := largestream.Configure("TestReferenceDriverSuite"); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

func TestReferenceDriverSuite(t *testing.T) {
	testsuites.Driver(t, func() (storage.Driver, error) { return New(), nil }, false)
}

// pattern returns n bytes that differ at every offset modulo 251, so a
// misplaced byte is caught.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func TestReaderAcrossChunkBoundaries(t *testing.T) {
	ctx := context.Background()
	d := New()
	want := pattern(2*chunkSize + 17)

	// Written in odd-sized pieces so that chunks get filled by several writes.
	w, err := d.Writer(ctx, "/big", false)
	if err != nil {
		t.Fatalf("opening writer: %v", err)
	}
	for rest := want; len(rest) > 0; {
		n := min(len(rest), 300_007)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatalf("writing: %v", err)
		}
		rest = rest[n:]
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	for _, off := range []int64{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 2 * chunkSize, int64(len(want)) - 1, int64(len(want))} {
		r, err := d.Reader(ctx, "/big", off)
		if err != nil {
			t.Fatalf("Reader at %d: %v", off, err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("reading at %d: %v", off, err)
		}
		if !bytes.Equal(got, want[off:]) {
			t.Errorf("Reader at offset %d returned %d bytes that differ from the %d bytes written there", off, len(got), len(want[off:]))
		}
	}
	got, err := d.GetContent(ctx, "/big")
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("GetContent returned %d bytes (err %v), want the %d written", len(got), err, len(want))
	}
}

func TestStoredContentIsIsolatedFromCallerSlices(t *testing.T) {
	ctx := context.Background()
	d := New()
	in := []byte("original")
	if err := d.PutContent(ctx, "/f", in); err != nil {
		t.Fatal(err)
	}
	in[0] = 'X'
	out, err := d.GetContent(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	out[1] = 'Y'
	again, err := d.GetContent(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != "original" {
		t.Errorf("stored content changed to %q after the caller modified its slices", again)
	}
}

func TestReaderKeepsItsViewWhileFileIsAppendedAndReplaced(t *testing.T) {
	ctx := context.Background()
	d := New()
	if err := d.PutContent(ctx, "/f", []byte("first")); err != nil {
		t.Fatal(err)
	}
	r, err := d.Reader(ctx, "/f", 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w, err := d.Writer(ctx, "/f", true)
		if err != nil {
			t.Error(err)
			return
		}
		for range 100 {
			if _, err := w.Write([]byte("more")); err != nil {
				t.Error(err)
				return
			}
		}
		if err := w.Commit(ctx); err != nil {
			t.Error(err)
		}
		if err := d.PutContent(ctx, "/f", []byte("replaced")); err != nil {
			t.Error(err)
		}
	}()
	got, err := io.ReadAll(r)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "first" {
		t.Errorf("a reader opened before the append read %q, want the content at open time %q", got, "first")
	}
}
