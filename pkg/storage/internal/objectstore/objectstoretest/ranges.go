// Package objectstoretest holds the checks that every object store driver
// runs against its store's server.
package objectstoretest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/url"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore"
)

// RangeOpener checks o, the RangeOpener of driver d, on d's store: ranges
// from offsets, the object's size and version, ErrRangeNotSatisfiable at
// and past the end, PathNotFoundError for a missing object, and
// ErrObjectChanged for a range pinned to a version that was replaced or
// deleted.
func RangeOpener(t *testing.T, d storage.Driver, o objectstore.RangeOpener) {
	ctx := context.Background()
	const p = "/ranges/object"
	want := random(t, 3000)
	if err := d.PutContent(ctx, p, want); err != nil {
		t.Fatal(err)
	}
	read := func(off, n int64, version string) ([]byte, objectstore.Object, error) {
		t.Helper()
		rc, obj, err := o.OpenRange(ctx, p, off, n, version)
		if err != nil {
			return nil, obj, err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return b, obj, err
	}
	got, obj, err := read(0, 1000, "")
	if err != nil || !bytes.Equal(got, want[:1000]) || obj.Size != 3000 || obj.Version == "" {
		t.Fatalf("OpenRange(0, 1000) = %d bytes, %+v, %v; want the first 1000 of 3000 and a version", len(got), obj, err)
	}
	got, obj2, err := read(1500, 10_000, obj.Version)
	if err != nil || !bytes.Equal(got, want[1500:]) || obj2 != obj {
		t.Errorf("OpenRange(1500, 10000, its version) = %d bytes, %+v, %v; want the last 1500 of %+v", len(got), obj2, err, obj)
	}
	for _, off := range []int64{3000, 3001} {
		if _, _, err := read(off, 10, ""); !errors.Is(err, objectstore.ErrRangeNotSatisfiable) {
			t.Errorf("OpenRange(%d) of 3000 bytes = %v, want %v", off, err, objectstore.ErrRangeNotSatisfiable)
		}
	}
	var notFound storage.PathNotFoundError
	if _, _, err := o.OpenRange(ctx, "/ranges/missing", 0, 10, ""); !errors.As(err, &notFound) {
		t.Errorf("OpenRange of a missing object = %v, want a PathNotFoundError", err)
	}
	if err := d.PutContent(ctx, p, random(t, 3000)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := read(0, 10, obj.Version); !errors.Is(err, objectstore.ErrObjectChanged) {
		t.Errorf("OpenRange pinned to a replaced version = %v, want %v", err, objectstore.ErrObjectChanged)
	}
	_, obj, err = read(0, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, _, err := read(0, 10, obj.Version); !errors.Is(err, objectstore.ErrObjectChanged) {
		t.Errorf("OpenRange pinned to a deleted object = %v, want %v", err, objectstore.ErrObjectChanged)
	}
}

// LargeReads opens a driver with open on storageURL (a fresh prefix of the
// store), with ranges of 1 MiB, 4 in flight, and checks that its Reader
// reads an object several ranges long intact, whole and from offsets that
// are not on a range's boundary, and that a short read from the middle is
// intact too.
func LargeReads(t *testing.T, storageURL string, open func(context.Context, *url.URL) (storage.Driver, error)) {
	ctx := context.Background()
	u, err := url.Parse(storageURL + "&readRangeSize=1048576&readRanges=4")
	if err != nil {
		t.Fatal(err)
	}
	d, err := open(ctx, u)
	if err != nil {
		t.Fatalf("opening %s: %v", u, err)
	}
	const p, rangeSize = "/ranges/large", 1 << 20
	want := random(t, 9*rangeSize+12345)
	if err := d.PutContent(ctx, p, want); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 3*rangeSize/2 + 7, rangeSize * 2} {
		r, err := d.Reader(ctx, p, off)
		if err != nil {
			t.Fatalf("Reader at %d: %v", off, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, want[off:]) {
			t.Errorf("Reader at %d: %d bytes (%v) that differ from the %d stored there", off, len(got), err, len(want)-int(off))
		}
	}
	r, err := d.Reader(ctx, p, 12345)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.LimitReader(r, rangeSize/2))
	if err != nil || !bytes.Equal(got, want[12345:12345+rangeSize/2]) {
		t.Errorf("512 KiB from 12345: %d bytes (%v) that differ from the stored", len(got), err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close after a short read: %v", err)
	}
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
