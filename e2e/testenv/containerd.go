package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Debian's docker.io package (and the containerd package it depends on)
// install these. /usr/local/bin may hold a newer docker client on a
// developer machine, so the package's paths are used explicitly.
const (
	DebianDockerd    = "/usr/sbin/dockerd"
	DebianDocker     = "/usr/bin/docker"
	DebianContainerd = "/usr/bin/containerd"
	DebianCtr        = "/usr/bin/ctr"
)

// ContainerdOptions describes a standalone containerd.
type ContainerdOptions struct {
	// Binary is containerd; empty means DebianContainerd.
	Binary string
	// Ctr is the ctr client; empty means DebianCtr.
	Ctr string
	// Dir holds the config, root, state, sockets and the log,
	// containerd.log. Unix socket paths are limited to 108 bytes, so keep
	// it short (MkdirTemp under /tmp rather than a test's TempDir).
	Dir string
	// ReadyTimeout bounds the wait for the socket; zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// ContainerdDaemon is a started containerd whose root, state and sockets are all
// under its Dir, so that it shares nothing with a system containerd.
type ContainerdDaemon struct {
	*Process
	// Socket is the gRPC socket (ctr -a, dockerd --containerd).
	Socket string
	ctr    string
}

// containerdConfig keeps everything under one directory. The CRI plugin is
// off: it wants a CNI setup and is not what ctr or dockerd use.
const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = %q
`

// StartContainerd writes a config under opts.Dir and starts containerd,
// waiting until `ctr version` answers on its socket.
func StartContainerd(ctx context.Context, opts ContainerdOptions) (*ContainerdDaemon, error) {
	bin := orDefault(opts.Binary, DebianContainerd)
	ctr := orDefault(opts.Ctr, DebianCtr)
	for _, b := range []string{bin, ctr} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("starting containerd: %w (Debian package containerd, a dependency of docker.io)", err)
		}
	}
	sock := filepath.Join(opts.Dir, "containerd.sock")
	if len(sock) > 100 {
		return nil, fmt.Errorf("starting containerd: socket path %s is too long for a unix socket", sock)
	}
	config := filepath.Join(opts.Dir, "containerd.toml")
	body := fmt.Sprintf(containerdConfig,
		filepath.Join(opts.Dir, "root"), filepath.Join(opts.Dir, "state"),
		sock, sock+".ttrpc", filepath.Join(opts.Dir, "debug.sock"))
	if err := os.WriteFile(config, []byte(body), 0o644); err != nil {
		return nil, fmt.Errorf("writing containerd config: %w", err)
	}
	c := &ContainerdDaemon{Socket: sock, ctr: ctr}
	p, err := Start(ctx, Options{
		Name:    "containerd " + opts.Dir,
		Path:    bin,
		Args:    []string{"--config", config},
		LogPath: filepath.Join(opts.Dir, "containerd.log"),
		Ready: func(ctx context.Context) error {
			if _, err := os.Stat(sock); err != nil {
				return err
			}
			_, err := c.Ctr(ctx, "version")
			return err
		},
		ReadyTimeout: opts.ReadyTimeout,
	})
	if err != nil {
		return nil, err
	}
	c.Process = p
	return c, nil
}

// Ctr runs `ctr -a <socket> args...` and returns its combined output; the
// error quotes it.
func (c *ContainerdDaemon) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	return runTool(ctx, nil, c.ctr, append([]string{"-a", c.Socket}, args...)...)
}

// runTool runs a client program and returns its combined output; the error
// quotes the output, which is where such programs say what went wrong.
func runTool(ctx context.Context, env []string, bin string, args ...string) ([]byte, error) {
	return runToolInput(ctx, env, nil, bin, args...)
}

// runToolInput is runTool with stdin (nil: none), for clients that read
// a secret there (docker login --password-stdin).
func runToolInput(ctx context.Context, env []string, stdin io.Reader, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// errNotRoot is returned where a daemon needs root.
var errNotRoot = errors.New("needs root")
