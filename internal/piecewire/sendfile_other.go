//go:build !linux

package piecewire

import (
	"errors"
	"net"
	"os"
	"syscall"
)

func limitUnsent(net.Conn, int) {}

// haveSendfile says whether sendfile can be used on this system.
const haveSendfile = false

func sendfile(syscall.Conn, *os.File, int64, int64, int64, func(int64) error, func(int64)) (int64, error) {
	return 0, errors.New("sendfile: not supported on this system")
}
