package inmemory

import (
	"bytes"
	"io"
)

// chunkSize bounds each piece of a file's content. Storing a file as a list
// of pieces keeps a multi-gigabyte stream from needing one contiguous slice,
// and so from being copied whole each time append outgrows it.
const chunkSize = 1 << 20

// content is a file's bytes, as pieces of at most chunkSize bytes. It
// follows one rule that lets readers use a copy of it without holding the
// driver's lock: bytes below the length of each piece are never changed once
// published. Writers only append past the end of the last piece, add
// pieces, or replace the content as a whole.
type content struct {
	chunks [][]byte
	size   int64
}

func contentOf(p []byte) content {
	var c content
	c.append(p)
	return c
}

// append adds p at the end. The caller holds the driver's write lock.
func (c *content) append(p []byte) {
	for len(p) > 0 {
		n := len(c.chunks)
		if n == 0 || len(c.chunks[n-1]) == chunkSize {
			// Sized to what is being written, so that a small file
			// does not pin a whole chunk.
			c.chunks = append(c.chunks, make([]byte, 0, min(len(p), chunkSize)))
			n++
		}
		last := c.chunks[n-1]
		k := min(len(p), chunkSize-len(last))
		c.chunks[n-1] = append(last, p[:k]...)
		c.size += int64(k)
		p = p[k:]
	}
}

// readerAt returns a reader of the content from offset on, which must be at
// most c.size. The caller holds the driver's lock; the reader does not need it.
func (c content) readerAt(offset int64) io.Reader {
	readers := make([]io.Reader, 0, len(c.chunks))
	for _, chunk := range c.chunks {
		if offset >= int64(len(chunk)) {
			offset -= int64(len(chunk))
			continue
		}
		readers = append(readers, bytes.NewReader(chunk[offset:]))
		offset = 0
	}
	return io.MultiReader(readers...)
}

// bytes returns a copy of the whole content.
func (c content) bytes() []byte {
	out := make([]byte, 0, c.size)
	for _, chunk := range c.chunks {
		out = append(out, chunk...)
	}
	return out
}
