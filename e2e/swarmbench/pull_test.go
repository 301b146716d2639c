package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestCopyHashingReadsAllAndHashes(t *testing.T) {
	for _, size := range []int{0, 1, 1 << 20, 3<<20 + 17} {
		data := bytes.Repeat([]byte{7}, size)
		h := sha256.New()
		n, err := copyHashing(h, iotest.HalfReader(bytes.NewReader(data)))
		if err != nil || n != int64(size) {
			t.Fatalf("size %d: copied %d, %v", size, n, err)
		}
		if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
			t.Errorf("size %d: wrong hash", size)
		}
	}
}

// A body cut before its Content-Length ends in io.ErrUnexpectedEOF; that is
// a failed pull, not a short one that looks complete.
func TestCopyHashingReportsACutBody(t *testing.T) {
	cut := io.MultiReader(bytes.NewReader(make([]byte, 1500)), iotest.ErrReader(io.ErrUnexpectedEOF))
	n, err := copyHashing(sha256.New(), cut)
	if !errors.Is(err, io.ErrUnexpectedEOF) || n != 1500 {
		t.Fatalf("copyHashing of a cut body = %d, %v; want 1500, io.ErrUnexpectedEOF", n, err)
	}
}
