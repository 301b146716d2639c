//go:build !linux

package main

import "syscall"

// childAttr puts a demo child in its own process group, so that a Ctrl-C
// reaches shoalctl only, which stops the children in order.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
