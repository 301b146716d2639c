package main

import "syscall"

// childAttr puts a demo child in its own process group (a Ctrl-C reaches
// shoalctl only, which stops the children in order) and has the kernel
// kill it if shoalctl itself dies without stopping it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
