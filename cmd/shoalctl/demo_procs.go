package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a server process the demo started.
type child struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited
	err     error         // its exit status, set before done closes
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the child's pid, and SIGKILL after grace.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.done
	}
}

// logTail is the end of the child's log, for an error message.
func (c *child) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return fmt.Sprintf("\n--- end of %s ---\n%s", c.logPath, strings.Join(lines, "\n"))
}

// procs are the demo's children, stopped in the reverse order of their
// start (agents before the origin and tracker they talk to).
type procs struct {
	mu   sync.Mutex
	list []*child
}

// start runs bin with args, its output in logPath, and waits until GET
// readyURL answers 200. The child gets its own process group, so that a
// Ctrl-C in the terminal reaches shoalctl alone, which then stops the
// children in order.
func (p *procs) start(ctx context.Context, name, bin, logPath, readyURL string, args ...string) (*child, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	defer log.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	c := &child{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	p.mu.Lock()
	p.list = append(p.list, c)
	p.mu.Unlock()
	if err := waitReady(ctx, c, readyURL); err != nil {
		return nil, fmt.Errorf("starting %s: %w%s", name, err, c.logTail())
	}
	return c, nil
}

// stopAll stops every child, the last started first. It returns their
// pids, and the children that exited with an error (or were killed).
func (p *procs) stopAll(grace time.Duration) (pids []int, unclean []*child) {
	p.mu.Lock()
	list := p.list
	p.list = nil
	p.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		c := list[i]
		pids = append(pids, c.pid())
		c.stop(grace)
		if c.err != nil {
			unclean = append(unclean, c)
		}
	}
	return pids, unclean
}

// readyTimeout bounds a child's start: a few seconds normally, more on a
// loaded machine.
const readyTimeout = time.Minute

func waitReady(ctx context.Context, c *child, url string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-c.done:
			return fmt.Errorf("exited before becoming ready (%v)", c.err)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not ready after %s: %w", readyTimeout, last)
			}
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freeAddrs returns n loopback addresses whose ports were free a moment
// ago, all different. Another program may take one before the child binds
// it; the child then exits at start and the demo says so.
func freeAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	addrs := make([]string, n)
	for i := range addrs {
		// Held open until all are chosen, so the kernel hands out n
		// different ports.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		lns = append(lns, l)
		addrs[i] = l.Addr().String()
	}
	return addrs, nil
}
