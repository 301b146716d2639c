package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// server is one registry process under test: Shoal's origin or the reference registry.
type server struct {
	name    string // column heading in the report
	baseURL string // http://127.0.0.1:port
	dataDir string // storage root, its own temp dir
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been reaped
}

// pid is the server process id; RSS is sampled from /proc/<pid>/status.
func (s *server) pid() int { return s.cmd.Process.Pid }

// buildOrigin compiles cmd/origin from the module the bench runs in.
func buildOrigin(ctx context.Context, binDir string) (string, error) {
	out := filepath.Join(binDir, "origin")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/shoal-dev/shoal/cmd/origin")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building cmd/origin: %w\n%s", err, b)
	}
	return out, nil
}

// buildReference installs the reference registry at the pinned version from the module proxy.
// `go install pkg@version` ignores the current module, so the registry is built with its own
// go.mod, exactly as released.
func buildReference(ctx context.Context, binDir, version string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/distribution/distribution/v3/cmd/registry@"+version)
	cmd.Env = append(os.Environ(), "GOBIN="+binDir)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building reference registry %s: %w\n%s", version, err, b)
	}
	return filepath.Join(binDir, "registry"), nil
}

// referenceConfig is the configuration the registry:2 image ships (distribution-library-image),
// minus nothing that matters for speed: in-memory blob descriptor cache, info logging, storage
// health check. Benchmarking it as people run it is the point.
const referenceConfig = `version: 0.1
log:
  level: %s
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`

// freeAddr picks a free loopback port. The port is released before the server binds it, so
// another process could take it in between; startup then fails loudly rather than silently.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startOrigin runs Shoal's origin on a filesystem storage rooted in its own temp dir.
func startOrigin(ctx context.Context, bin, workDir string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(workDir, "shoal-data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating origin storage dir: %w", err)
	}
	s := &server{name: "Shoal", baseURL: "http://" + addr, dataDir: dataDir, logPath: filepath.Join(workDir, "shoal.log")}
	args := []string{"--listen", addr, "--storage", "file://" + dataDir}
	return s, s.start(ctx, bin, args, "/readyz")
}

// startReference runs the reference registry with the registry:2 image's configuration.
// name is the report column: "registry:2", or "Shoal" when the reference stands in for the origin.
func startReference(ctx context.Context, bin, workDir, name, logLevel string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	slug := strings.NewReplacer(":", "", " ", "-", "/", "-").Replace(strings.ToLower(name))
	dataDir := filepath.Join(workDir, slug+"-data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating registry storage dir: %w", err)
	}
	cfgPath := filepath.Join(workDir, slug+"-config.yml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, referenceConfig, logLevel, dataDir, addr), 0o644); err != nil {
		return nil, fmt.Errorf("writing registry config: %w", err)
	}
	s := &server{name: name, baseURL: "http://" + addr, dataDir: dataDir, logPath: filepath.Join(workDir, slug+".log")}
	return s, s.start(ctx, bin, []string{"serve", cfgPath}, "/v2/")
}

func (s *server) start(ctx context.Context, bin string, args []string, readyPath string) error {
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return fmt.Errorf("creating log for %s: %w", s.name, err)
	}
	// Not CommandContext: a cancelled run must still stop the server gracefully in stop().
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout = logFile
	s.cmd.Stderr = logFile
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s (%s): %w", s.name, bin, err)
	}
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	slog.Info("started server", "name", s.name, "pid", s.pid(), "url", s.baseURL, "log", s.logPath)
	return s.waitReady(ctx, readyPath, 60*time.Second)
}

func (s *server) waitReady(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before becoming ready (%s); log tail:\n%s", s.name, s.cmd.ProcessState, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to become ready: %w", s.name, ctx.Err())
		default:
		}
		resp, err := client.Get(s.baseURL + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready on %s%s after %s; log tail:\n%s", s.name, s.baseURL, path, timeout, s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM (the graceful stop both servers implement) and SIGKILL if it takes too long.
func (s *server) stop() error {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sending SIGTERM to %s (pid %d): %w", s.name, s.pid(), err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(15 * time.Second):
	}
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s (pid %d): %w", s.name, s.pid(), err)
	}
	<-s.exited
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for 15s and was killed", s.name, s.pid())
}

func (s *server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", s.logPath, err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
