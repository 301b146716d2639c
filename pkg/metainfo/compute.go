package metainfo

import (
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
)

// Compute reads a blob of size bytes from r and returns its metainfo with
// the given piece length, in the scheme SchemeFor gives. The blob is
// hashed while it streams (a Hasher), so memory use does not grow with the
// blob or the piece length; a Chained one hashes each byte once, its
// SHA-256 being the blob's digest too. It fails if r yields fewer or more
// than size bytes, or bytes whose digest is not want: metainfo is only
// ever computed for a blob that is what its name says.
func Compute(r io.Reader, want digest.Digest, size, pieceLength int64) (*Metainfo, error) {
	if err := want.Validate(); err != nil {
		return nil, fmt.Errorf("computing metainfo: invalid digest %q: %w", want, err)
	}
	if size < 0 {
		return nil, fmt.Errorf("computing metainfo for %s: negative size %d", want, size)
	}
	// Validate the piece length before reading anything: a bad one is a
	// caller bug, not a storage problem.
	h, err := NewHasher(SchemeFor(want, pieceLength), pieceLength)
	if err != nil {
		return nil, fmt.Errorf("computing metainfo for %s: %w", want, err)
	}
	var w io.Writer = h
	blob := h.BlobHash()
	if blob == nil {
		blob = want.Algorithm().Hash()
		w = io.MultiWriter(blob, h)
	}
	got, err := io.CopyBuffer(w, io.LimitReader(r, size), make([]byte, 128<<10))
	if err != nil {
		return nil, fmt.Errorf("computing metainfo for %s: reading at %d: %w", want, got, err)
	}
	if got != size {
		return nil, fmt.Errorf("computing metainfo for %s: blob ended after %d bytes, want %d", want, got, size)
	}
	// One more byte would mean the blob is larger than size: a stale size
	// from a HEAD, or the wrong file.
	var extra [1]byte
	if n, err := io.ReadFull(r, extra[:]); n != 0 {
		return nil, fmt.Errorf("computing metainfo for %s: blob is longer than %d bytes", want, size)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("computing metainfo for %s: reading past the end: %w", want, err)
	}
	if d := digest.NewDigest(want.Algorithm(), blob); d != want {
		return nil, fmt.Errorf("computing metainfo for %s: blob content has digest %s", want, d)
	}
	return h.Metainfo(want)
}
