package piecewire

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// limitUnsent caps the bytes nc's socket holds that TCP has not sent yet
// at n (TCP_NOTSENT_LOWAT): a write returns once its bytes are on the
// wire or nearly so, not when they fit in a send buffer of megabytes.
// Best effort: a connection that is not TCP is left as it is.
func limitUnsent(nc net.Conn, n int) {
	if u, ok := nc.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		nc = u.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = setsockoptInt(rc, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, n)
}

// setsockoptInt sets an integer socket option on rc's socket.
func setsockoptInt(rc syscall.RawConn, level, opt, value int) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), level, opt, value)
	}); err != nil {
		return err
	}
	return serr
}

// haveSendfile says whether sendfile can be used on this system.
const haveSendfile = true

// sendfile writes the n bytes of f at off to the socket c with
// sendfile(2), step bytes per round; before runs ahead of each round with
// its size (to renew the write deadline and wait for egress budget), after
// once it wrote some.
//
// Not io.Copy: Go's sendfile path (net.TCPConn.ReadFrom) sends from the
// file's current offset, and a piece file is shared by every upload of its
// blob, each at its own offset. Passing the offset to sendfile keeps the
// descriptor's position untouched, like pread.
func sendfile(c syscall.Conn, f *os.File, off, n, step int64, before func(int64) error, after func(int64)) (int64, error) {
	out, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("sendfile: %w", err)
	}
	in, err := f.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("sendfile: %w", err)
	}
	var sent int64
	var opErr error
	ctlErr := in.Control(func(infd uintptr) {
		for sent < n && opErr == nil {
			round := min(step, n-sent)
			if opErr = before(round); opErr != nil {
				return
			}
			var done int64
			werr := out.Write(func(outfd uintptr) bool {
				for done < round {
					m, e := syscall.Sendfile(int(outfd), int(infd), &off, int(round-done))
					if m > 0 {
						done += int64(m)
					}
					switch {
					case e == syscall.EAGAIN:
						return false // the poller waits until the socket takes more (or the deadline)
					case e == syscall.EINTR:
						continue
					case e != nil:
						opErr = os.NewSyscallError("sendfile", e)
						return true
					case m == 0:
						opErr = fmt.Errorf("sendfile: the file ended %d bytes early: %w", n-sent-done, io.ErrUnexpectedEOF)
						return true
					}
				}
				return true
			})
			sent += done
			if done > 0 {
				after(done)
			}
			if werr != nil && opErr == nil {
				opErr = werr
			}
		}
	})
	if ctlErr != nil {
		return sent, fmt.Errorf("sendfile: %w", ctlErr)
	}
	return sent, opErr
}
