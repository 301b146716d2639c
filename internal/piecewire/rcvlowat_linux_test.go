package piecewire

import (
	"bytes"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rcvLowatOf reads the client socket's SO_RCVLOWAT.
func rcvLowatOf(t *testing.T, c *Conn) int {
	t.Helper()
	rc, err := c.nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return v
}

// waitRcvLowat waits until the client's socket wakes its reader at one
// of want bytes.
func waitRcvLowat(t *testing.T, c *Conn, want ...int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		got := rcvLowatOf(t, c)
		if slices.Contains(want, got) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("SO_RCVLOWAT %d; want one of %d", got, want)
		}
	}
}

// A piece arriving a little at a time is read a step at a time: the
// reader that found part of a step waits for the rest of it in one go,
// never for more than the piece still owes, and headers are read as they
// come. The piece arrives whole and verified.
func TestPieceBytesWakeTheReaderAStepAtATime(t *testing.T) {
	b := newBlob(t, 896<<10, 512<<10) // piece 1: one whole step, then half of one
	fs, c := requested(t, b, ClientConfig{})
	waitRcvLowat(t, c, 1)
	p := b.piece(1)
	hdr, err := AppendFrame(nil, Frame{Type: FramePiece, Index: 1, Length: uint32(len(p))})
	if err != nil {
		t.Fatal(err)
	}
	fs.write(t, append(hdr, p[:1000]...))
	// The rest of the first step once the reader has the 1000 bytes (it
	// read them with the header, or before parking), or the whole step
	// if it parked before they came: either way one wake-up for the step.
	waitRcvLowat(t, c, readStep-1000, readStep)
	for off := 1000; off < readStep; off += 4096 {
		fs.write(t, p[off:min(off+4096, readStep)])
	}
	// The second step is what is left of the piece, and no more.
	waitRcvLowat(t, c, len(p)-readStep)
	fs.write(t, p[readStep:])
	r, ok := nextResult(t, c)
	if !ok || r.Index != 1 || !bytes.Equal(r.Data, p) {
		t.Fatalf("result %d (ok %v, %d bytes); want piece 1 whole", r.Index, ok, len(r.Data))
	}
	waitRcvLowat(t, c, 1)
}
