package piecewire

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// rcvLowat is a plaintext TCP connection's SO_RCVLOWAT: the kernel wakes
// its reader only once that many bytes are queued (or the connection
// ends). A piece arriving at a link's pace otherwise wakes the reading
// goroutine for every few packets, and each wake-up (netpoll, the Go
// scheduler, a read) costs more than copying the bytes it brings.
type rcvLowat struct {
	rc  syscall.RawConn
	cur int
}

// newRcvLowat returns nc's low-water mark, or nil where there is none to
// set: a TLS connection's reads are records, not the bytes wanted.
func newRcvLowat(nc net.Conn) *rcvLowat {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &rcvLowat{rc: rc, cur: 1}
}

// set makes the reader wait for n bytes (at least 1). The caller must be
// sure n more bytes will come (they are the rest of a frame being read),
// else the read waits for its deadline. A failure leaves the mark as it
// was and turns it off: reads then wake as they did without it.
func (l *rcvLowat) set(n int) {
	if l == nil || l.rc == nil || n == l.cur {
		return
	}
	n = max(n, 1)
	if err := setsockoptInt(l.rc, unix.SOL_SOCKET, unix.SO_RCVLOWAT, n); err != nil {
		l.rc = nil
		return
	}
	l.cur = n
}
