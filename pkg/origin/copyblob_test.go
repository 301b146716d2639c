package origin

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// writerToSource is a store's stream that can write itself out, and
// records whether it did.
type writerToSource struct {
	*bytes.Reader
	wroteTo bool
}

func (s *writerToSource) WriteTo(w io.Writer) (int64, error) {
	s.wroteTo = true
	return s.Reader.WriteTo(w)
}

// TestCopyBlob: a copy to the blob's end lets a stream write itself out
// and checks its length; a range that ends before the blob's end is
// copied up to its length only.
func TestCopyBlob(t *testing.T) {
	blob := []byte("0123456789")
	src := &writerToSource{Reader: bytes.NewReader(blob)}
	var out bytes.Buffer
	if n, err := copyBlob(&out, src, 10, true); err != nil || n != 10 || out.String() != "0123456789" || !src.wroteTo {
		t.Errorf("copy to the end: %d, %v, %q, WriteTo used %v; want all 10 bytes through WriteTo", n, err, out.String(), src.wroteTo)
	}

	src, out = &writerToSource{Reader: bytes.NewReader(blob)}, bytes.Buffer{}
	if n, err := copyBlob(&out, src, 4, false); err != nil || n != 4 || out.String() != "0123" || src.wroteTo {
		t.Errorf("copy of a range: %d, %v, %q, WriteTo used %v; want the first 4 bytes, no WriteTo", n, err, out.String(), src.wroteTo)
	}

	src, out = &writerToSource{Reader: bytes.NewReader(blob[:7])}, bytes.Buffer{}
	if _, err := copyBlob(&out, src, 10, true); err == nil || !strings.Contains(err.Error(), "7 bytes, not 10") {
		t.Errorf("a stream shorter than the blob: %v; want an error naming both lengths", err)
	}
}
