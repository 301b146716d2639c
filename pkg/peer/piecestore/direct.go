package piecestore

import (
	"errors"
	"os"
	"syscall"
	"unsafe"
)

// Pieces are written with O_DIRECT where the filesystem allows it. On the
// machines we measured (ext4 in a Firecracker VM), filling fresh page-cache
// pages of a sparse file costs ~1.7 CPU-seconds per GiB in the kernel
// (delayed allocation), more than hashing the piece; an O_DIRECT write of
// the same bytes costs ~0.07 and leaves the page cache to what is read.
// Reads stay buffered: they hit the page cache for blobs served often and
// read ahead for the rest. docs/agent.md has the figures.

// directAlign is what O_DIRECT asks of a write's offset, length and buffer
// address (the largest logical block size in common use).
const directAlign = 4096

// openDirect opens path for O_DIRECT writes, or returns nil where the
// filesystem refuses them (tmpfs, some FUSE and network filesystems): the
// blob's ordinary descriptor is used then.
func openDirect(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return f
}

// writeAt writes data at off: its aligned head through the O_DIRECT
// descriptor when there is one and the buffer allows it, the rest (the
// tail of a blob's last piece, or everything on a filesystem without
// O_DIRECT) through the ordinary one. The two ranges are disjoint pages, so
// the page cache never holds a stale copy of a direct write.
func (b *blob) writeAt(data []byte, off int64) error {
	if b.direct != nil && off%directAlign == 0 && len(data) >= directAlign && alignOf(data) == 0 {
		n := len(data) &^ (directAlign - 1)
		_, err := b.direct.WriteAt(data[:n], off)
		switch {
		case err == nil:
			data, off = data[n:], off+int64(n)
		case !errors.Is(err, syscall.EINVAL):
			return err
		}
		// EINVAL: the device wants a larger alignment; write it buffered.
	}
	if len(data) == 0 {
		return nil
	}
	_, err := b.f.WriteAt(data, off)
	return err
}

// alignOf returns the address of b's first byte modulo directAlign.
func alignOf(b []byte) int {
	return int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % directAlign)
}
