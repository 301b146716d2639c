package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultReadyTimeout bounds the wait for a started process to become
// ready. Generous because a race-enabled binary on two busy cores is slow
// to start.
const DefaultReadyTimeout = 60 * time.Second

// DefaultStopTimeout is how long Stop waits after SIGTERM before SIGKILL.
const DefaultStopTimeout = 15 * time.Second

// raceMarker is what the race detector prints on a data race.
const raceMarker = "WARNING: DATA RACE"

// Options describes a process to start.
type Options struct {
	// Name identifies the process in errors.
	Name string
	// Path is the binary.
	Path string
	Args []string
	// Env is added to this process's environment.
	Env []string
	// LogPath receives the process's stdout and stderr (appended, so that
	// restarts of a server keep one log).
	LogPath string
	// Ready is polled until it returns nil; nil means ready once started.
	Ready func(ctx context.Context) error
	// ReadyTimeout bounds the wait for Ready; zero means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// ListenAddr, when set, is a TCP address the process must be listening
	// on itself before it counts as ready: a probe alone could be answered
	// by whichever process took the port first.
	ListenAddr string
}

// Process is a started child process.
type Process struct {
	Name    string
	LogPath string

	opts Options // what Restart starts again
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	// waitErr is written once before done is closed.
	waitErr error

	stopOnce sync.Once
	stopErr  error
}

// Start starts a process and waits until it is ready. If it exits or does
// not become ready in time, Start returns an error that quotes the end of
// its log.
func Start(ctx context.Context, opts Options) (*Process, error) {
	p := &Process{Name: opts.Name, LogPath: opts.LogPath, opts: opts}
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// start runs p.opts's command and waits until it is ready.
func (p *Process) start(ctx context.Context) error {
	opts := p.opts
	log, err := os.OpenFile(opts.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("starting %s: opening log: %w", opts.Name, err)
	}
	cmd := exec.Command(opts.Path, opts.Args...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Stdout = log
	cmd.Stderr = log
	// If the test binary dies (a panic, a -timeout), take the child with
	// it instead of leaving a server holding a port.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting %s: %w", opts.Name, err)
	}
	p.cmd, p.log, p.done, p.waitErr = cmd, log, make(chan struct{}), nil
	done := p.done
	go func() {
		p.waitErr = cmd.Wait()
		log.Close()
		close(done)
	}()
	if err := p.waitReady(ctx, opts); err != nil {
		_ = p.Stop(DefaultStopTimeout)
		return fmt.Errorf("starting %s: %w\n%s", opts.Name, err, p.LogTail(30))
	}
	return nil
}

// Restart starts a process that was stopped or killed again, with the same
// command line, environment, log (appended) and readiness check: a server
// comes back on the ports it had, as a restarted daemon would, and the
// cleanup registered for it stops the new run. Restarting a process that
// is still running is an error.
func (p *Process) Restart(ctx context.Context) error {
	if !p.Exited() {
		return fmt.Errorf("restarting %s: still running (pid %d)", p.Name, p.PID())
	}
	p.stopOnce, p.stopErr = sync.Once{}, nil
	return p.start(ctx)
}

func (p *Process) ready(ctx context.Context, opts Options) error {
	if opts.Ready != nil {
		if err := opts.Ready(ctx); err != nil {
			return err
		}
	}
	if opts.ListenAddr == "" {
		return nil
	}
	_, portStr, err := net.SplitHostPort(opts.ListenAddr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", opts.ListenAddr, err)
	}
	owned, err := listensOn(p.PID(), port)
	if err != nil {
		return err
	}
	if !owned {
		return fmt.Errorf("%s answers but is not a listener of pid %d (another process took the port)", opts.ListenAddr, p.PID())
	}
	return nil
}

func (p *Process) waitReady(ctx context.Context, opts Options) error {
	if opts.Ready == nil && opts.ListenAddr == "" {
		return nil
	}
	timeout := opts.ReadyTimeout
	if timeout == 0 {
		timeout = DefaultReadyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = p.ready(ctx, opts); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before becoming ready: %v", p.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", timeout, last)
		case <-tick.C:
		}
	}
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL, for tests of what a crash leaves behind, and waits
// for the process to exit. A later Stop returns nil.
func (p *Process) Kill() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	})
}

// Stop sends SIGTERM, waits up to timeout for the process to exit, then
// sends SIGKILL. It returns an error if the process needed SIGKILL, exited
// with a non-zero status or a signal, or reported a data race. Calling Stop
// again returns the first result.
func (p *Process) Stop(timeout time.Duration) error {
	p.stopOnce.Do(func() { p.stopErr = p.stop(timeout) })
	return p.stopErr
}

func (p *Process) stop(timeout time.Duration) error {
	var errs []error
	if !p.Exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(timeout):
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
			errs = append(errs, fmt.Errorf("%s (pid %d) ignored SIGTERM for %s and was killed", p.Name, p.PID(), timeout))
		}
	}
	if p.waitErr != nil && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s (pid %d) did not exit cleanly: %w", p.Name, p.PID(), p.waitErr))
	}
	if b, err := os.ReadFile(p.LogPath); err == nil && bytes.Contains(b, []byte(raceMarker)) {
		errs = append(errs, fmt.Errorf("%s reported a data race; see %s", p.Name, p.LogPath))
	}
	return errors.Join(errs...)
}

// LogTail returns the last n lines of the process's log.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(log %s unreadable: %v)", p.LogPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s ---\n%s", len(lines), p.LogPath, strings.Join(lines, "\n"))
}

// Server is a started process that serves HTTP on Addr.
type Server struct {
	*Process
	// Addr is host:port on 127.0.0.1.
	Addr string
	// TLS, when the server serves HTTPS on Addr, is a client configuration
	// that trusts its certificate (and presents none); nil for plain HTTP.
	TLS *tls.Config
}

// URL returns the server's base URL, http://Addr, or https://Addr when it
// serves TLS.
func (s *Server) URL() string {
	if s.TLS != nil {
		return "https://" + s.Addr
	}
	return "http://" + s.Addr
}

// handedOut holds the ports FreeAddr has returned, so that one test process
// never hands the same port to two servers (the kernel may offer a port
// again as soon as the probing listener closes).
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago and that this process has not returned before. Another process can
// still take it before ours binds it; the Start functions of servers check
// that the port is their child's and retry when it was taken.
func FreeAddr() (string, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("finding a free port: %w", err)
		}
		addr := l.Addr().(*net.TCPAddr)
		l.Close()
		handedOut.Lock()
		seen := handedOut.ports[addr.Port]
		handedOut.ports[addr.Port] = true
		handedOut.Unlock()
		if !seen {
			return addr.String(), nil
		}
	}
	return "", fmt.Errorf("finding a free port: the kernel kept offering ports already handed out")
}

// HTTPReady returns a readiness probe that wants 200 from GET url.
func HTTPReady(url string) func(ctx context.Context) error {
	return HTTPSReady(url, nil)
}

// HTTPSReady is HTTPReady over TLS with cfg (nil: plain HTTP, or the
// system roots for an https URL).
func HTTPSReady(url string, cfg *tls.Config) func(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	if cfg != nil {
		// A probe is done once the server is ready: no connection is
		// worth keeping.
		client.Transport = &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// startServer starts a server on a fresh port, retrying with another port
// when the chosen one was taken in the meantime. The server is ready only
// when its readiness probe passes and the listening socket on its port
// belongs to the child: otherwise a probe could be answered by whichever
// process took the port first.
func startServer(ctx context.Context, opts func(addr string) (Options, error)) (*Server, error) {
	var err error
	for range 3 {
		var addr string
		if addr, err = FreeAddr(); err != nil {
			return nil, err
		}
		var o Options
		if o, err = opts(addr); err != nil {
			return nil, err
		}
		o.ListenAddr = addr
		var p *Process
		if p, err = Start(ctx, o); err == nil {
			return &Server{Process: p, Addr: addr}, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
	return nil, err
}

// listensOn reports whether pid holds a TCP socket listening on port,
// from /proc/net/tcp{,6} and /proc/<pid>/fd.
func listensOn(pid, port int) (bool, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return false, err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(line)
			if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(p) == port {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return false, nil
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if target, err := os.Readlink(fdDir + "/" + e.Name()); err == nil && inodes[target] {
			return true, nil
		}
	}
	return false, nil
}
