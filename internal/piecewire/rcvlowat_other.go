//go:build !linux

package piecewire

import "net"

// rcvLowat is SO_RCVLOWAT where the system has it (rcvlowat_linux.go).
type rcvLowat struct{}

func newRcvLowat(net.Conn) *rcvLowat { return nil }

func (*rcvLowat) set(int) {}
