package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// DockerdOptions describes a dockerd with its own containerd.
type DockerdOptions struct {
	// Dockerd, Docker, Containerd and Ctr are the binaries; empty means
	// Debian's (DebianDockerd, ...).
	Dockerd, Docker, Containerd, Ctr string
	// Dir holds everything: data-root, exec-root, sockets, pidfile,
	// daemon.json, the client's config and the logs. Unix socket paths
	// are limited to 108 bytes, so use a short one (DockerdDir).
	Dir string
	// Mirrors is daemon.json's registry-mirrors (http://127.0.0.1:port).
	Mirrors []string
	// InsecureRegistries is daemon.json's insecure-registries (host:port).
	InsecureRegistries []string
	// ReadyTimeout bounds each daemon's start; zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// DockerDaemon is a started dockerd with its own standalone containerd. Both
// keep all their state under Dir, so several run side by side and none
// touches the host's Docker.
type DockerDaemon struct {
	*Process
	Containerd *ContainerdDaemon
	// Socket is dockerd's API socket (docker -H unix://Socket).
	Socket string
	Dir    string
	docker string
}

// DockerdDir makes a short directory under the system's temp directory for
// a dockerd (a test's TempDir can be too long for unix socket paths).
func DockerdDir() (string, error) {
	dir, err := os.MkdirTemp("", "shoal-dockerd-")
	if err != nil {
		return "", fmt.Errorf("making a dockerd directory: %w", err)
	}
	return dir, nil
}

// DockerdAvailable says why dockerd cannot run here, or returns nil.
func DockerdAvailable() error {
	for _, b := range []string{DebianDockerd, DebianDocker, DebianContainerd, DebianCtr} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (install Debian's docker.io package: apt-get install -y docker.io)", err)
		}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("dockerd %w", errNotRoot)
	}
	return nil
}

// StartDockerd starts a containerd and then dockerd on it:
//
//	dockerd --config-file Dir/daemon.json --data-root Dir/data --exec-root Dir/exec
//	  -H unix://Dir/docker.sock --pidfile Dir/docker.pid --containerd Dir/containerd/containerd.sock
//	  --storage-driver vfs --iptables=false --ip6tables=false --bridge none
//
// dockerd is given its containerd rather than left to start a managed one
// because dockerd 20.10 uses a system containerd whenever
// /run/containerd/containerd.sock exists, which would share state with the
// host. It waits until GET /_ping answers OK.
func StartDockerd(ctx context.Context, opts DockerdOptions) (*DockerDaemon, error) {
	if opts.Dir == "" {
		return nil, errors.New("starting dockerd: no directory")
	}
	ctdDir := filepath.Join(opts.Dir, "containerd")
	if err := os.MkdirAll(ctdDir, 0o755); err != nil {
		return nil, fmt.Errorf("starting dockerd: %w", err)
	}
	ctd, err := StartContainerd(ctx, ContainerdOptions{
		Binary: opts.Containerd, Ctr: opts.Ctr, Dir: ctdDir, ReadyTimeout: opts.ReadyTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("starting dockerd's containerd: %w", err)
	}
	d, err := startDockerd(ctx, opts, ctd)
	if err != nil {
		_ = ctd.Stop(DefaultStopTimeout)
		unmountUnder(opts.Dir)
		return nil, err
	}
	return d, nil
}

func startDockerd(ctx context.Context, opts DockerdOptions, ctd *ContainerdDaemon) (*DockerDaemon, error) {
	daemonJSON := map[string]any{
		"registry-mirrors":    orEmpty(opts.Mirrors),
		"insecure-registries": orEmpty(opts.InsecureRegistries),
	}
	b, err := json.MarshalIndent(daemonJSON, "", "  ")
	if err != nil {
		return nil, err
	}
	config := filepath.Join(opts.Dir, "daemon.json")
	if err := os.WriteFile(config, b, 0o644); err != nil {
		return nil, fmt.Errorf("writing daemon.json: %w", err)
	}
	sock := filepath.Join(opts.Dir, "docker.sock")
	d := &DockerDaemon{
		Containerd: ctd,
		Socket:     sock,
		Dir:        opts.Dir,
		docker:     orDefault(opts.Docker, DebianDocker),
	}
	ping := unixHTTPClient(sock)
	p, err := Start(ctx, Options{
		Name: "dockerd " + opts.Dir,
		Path: orDefault(opts.Dockerd, DebianDockerd),
		Args: []string{
			"--config-file", config,
			"--data-root", filepath.Join(opts.Dir, "data"),
			"--exec-root", filepath.Join(opts.Dir, "exec"),
			"-H", "unix://" + sock,
			"--pidfile", filepath.Join(opts.Dir, "docker.pid"),
			"--containerd", ctd.Socket,
			"--storage-driver", "vfs",
			"--iptables=false", "--ip6tables=false", "--bridge", "none",
		},
		LogPath: filepath.Join(opts.Dir, "dockerd.log"),
		Ready: func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
			if err != nil {
				return err
			}
			resp, err := ping.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /_ping: %s", resp.Status)
			}
			return nil
		},
		ReadyTimeout: opts.ReadyTimeout,
	})
	if err != nil {
		return nil, err
	}
	d.Process = p
	return d, nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func unixHTTPClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
}

// Docker runs Debian's docker client against this daemon with its own
// client config directory (no credentials or contexts from the host) and
// the classic builder (BuildKit would need more than FROM scratch needs).
func (d *DockerDaemon) Docker(ctx context.Context, args ...string) ([]byte, error) {
	return d.DockerInput(ctx, nil, args...)
}

// DockerInput is Docker with stdin, for `docker login --password-stdin`.
// Credentials it stores stay in this daemon's own client config.
func (d *DockerDaemon) DockerInput(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	env := []string{
		"DOCKER_HOST=unix://" + d.Socket,
		"DOCKER_CONFIG=" + filepath.Join(d.Dir, "client"),
		"DOCKER_BUILDKIT=0",
		"DOCKER_CONTEXT=",
	}
	return runToolInput(ctx, env, stdin, d.docker, args...)
}

// Stop stops dockerd (SIGTERM, then SIGKILL after timeout), then its
// containerd, and detaches any mount left under Dir. The directory itself
// is left for the caller (it may hold logs worth reading).
func (d *DockerDaemon) Stop(timeout time.Duration) error {
	errs := []error{d.Process.Stop(timeout), d.Containerd.Stop(timeout)}
	unmountUnder(d.Dir)
	return errors.Join(errs...)
}

// Kill is Stop without grace.
func (d *DockerDaemon) Kill() {
	d.Process.Kill()
	d.Containerd.Kill()
	unmountUnder(d.Dir)
}

// Remove deletes Dir after Stop.
func (d *DockerDaemon) Remove() error {
	unmountUnder(d.Dir)
	return os.RemoveAll(d.Dir)
}

// unmountUnder lazily unmounts every mount point at or under dir, deepest
// first: dockerd bind-mounts its data-root and, when killed, leaves that
// and container mounts behind.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
