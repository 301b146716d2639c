package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"time"

	"github.com/shoal-dev/shoal/e2e/hdfs"
	"github.com/shoal-dev/shoal/e2e/procstat"
	"github.com/shoal-dev/shoal/e2e/testenv"
)

// bench holds what every transfer needs.
type bench struct {
	cli     string
	nn      *nameNodeJMX // nil while RPCs are not counted
	cluster *hdfs.Cluster
	origin  *testenv.Server
	file    string
	size    int64
	digest  string
}

const repo = "bench/layer"

var errNotCounted = errors.New("not counted in this run")

// findHDFSCLI checks that name is colinmarc's gohdfs command (Debian's
// hdfs-cli), not Hadoop's own `hdfs` script, which takes other arguments.
func findHDFSCLI(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("hdfs-cli not found as %q (apt-get install -y hdfs-cli): %w", name, err)
	}
	out, _ := exec.Command(path).CombinedOutput() // prints usage and exits non-zero
	if !bytes.Contains(out, []byte("getmerge")) || !bytes.Contains(out, []byte("put SOURCE DEST")) {
		return "", fmt.Errorf("%s does not look like hdfs-cli (gohdfs); its usage was:\n%s", path, out)
	}
	return path, nil
}

// hdfsCmd runs hdfs-cli against the cluster.
func (b *bench) hdfsCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, b.cli, args...)
	cmd.Env = append(os.Environ(), "HADOOP_NAMENODE="+b.cluster.NameNode())
	return cmd
}

func (b *bench) cliPath(run int) string { return fmt.Sprintf("/bench/cli/blob-%d", run) }

// rpcCounts are the namenode RPCs by method during a transfer, or why
// they could not be counted.
type rpcCounts struct {
	byMethod map[string]int64
	err      error
}

// measured runs fn between two readings of the namenode's RPC counters.
func (b *bench) measured(ctx context.Context, fn func() error) (rpcCounts, error) {
	if b.nn == nil {
		return rpcCounts{err: errNotCounted}, fn()
	}
	before, rpcErr := b.nn.counts(ctx)
	if err := fn(); err != nil {
		return rpcCounts{}, err
	}
	if rpcErr != nil {
		return rpcCounts{err: rpcErr}, nil
	}
	after, rpcErr := b.nn.counts(ctx)
	if rpcErr != nil {
		return rpcCounts{err: rpcErr}, nil
	}
	return rpcCounts{byMethod: diff(before, after)}, nil
}

func (b *bench) cliPut(ctx context.Context, run int) (transfer, error) {
	if out, err := b.hdfsCmd(ctx, "mkdir", "-p", "/bench/cli").CombinedOutput(); err != nil {
		return transfer{}, fmt.Errorf("hdfs mkdir: %w: %s", err, out)
	}
	var t transfer
	var err error
	t.rpcs, err = b.measured(ctx, func() error {
		start := time.Now()
		out, err := b.hdfsCmd(ctx, "put", b.file, b.cliPath(run)).CombinedOutput()
		t.took = time.Since(start)
		if err != nil {
			return fmt.Errorf("hdfs put: %w: %s", err, out)
		}
		return nil
	})
	t.bytes = b.size
	return t, err
}

func (b *bench) cliCat(ctx context.Context, run int) (transfer, error) {
	var t transfer
	var err error
	t.rpcs, err = b.measured(ctx, func() error {
		cmd := b.hdfsCmd(ctx, "cat", b.cliPath(run))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("hdfs cat: %w", err)
		}
		t.bytes, _ = io.Copy(io.Discard, out)
		err = cmd.Wait()
		t.took = time.Since(start)
		if err != nil {
			return fmt.Errorf("hdfs cat: %w: %s", err, stderr.String())
		}
		if t.bytes != b.size {
			return fmt.Errorf("hdfs cat: %w: %d of %d bytes", errShort, t.bytes, b.size)
		}
		return nil
	})
	return t, err
}

// push uploads the blob file the way docker does: POST, one PATCH with
// the whole layer, PUT with the digest. The blob is removed from HDFS first
// so that every run stores it anew (the origin skips storing a blob it
// already has).
func (b *bench) push(ctx context.Context, run int) (transfer, error) {
	if run > 0 {
		if out, err := b.hdfsCmd(ctx, "rm", "-r", "-f", "/bench/origin/docker/registry/v2/blobs").CombinedOutput(); err != nil {
			return transfer{}, fmt.Errorf("hdfs rm: %w: %s", err, out)
		}
	}
	return b.originTransfer(ctx, b.size, func() error {
		base := b.origin.URL()
		resp, err := do(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil, 0, nil)
		if err != nil {
			return err
		}
		if err := checkStatus(resp, http.StatusAccepted, "POST"); err != nil {
			return err
		}
		loc, err := resolve(base, resp.Header.Get("Location"))
		if err != nil {
			return err
		}
		f, err := os.Open(b.file)
		if err != nil {
			return err
		}
		defer f.Close()
		resp, err = do(ctx, http.MethodPatch, loc.String(), f, b.size, map[string]string{"Content-Type": "application/octet-stream"})
		if err != nil {
			return err
		}
		if err := checkStatus(resp, http.StatusAccepted, "PATCH"); err != nil {
			return err
		}
		if loc, err = resolve(base, resp.Header.Get("Location")); err != nil {
			return err
		}
		q := loc.Query()
		q.Set("digest", b.digest)
		loc.RawQuery = q.Encode()
		resp, err = do(ctx, http.MethodPut, loc.String(), nil, 0, nil)
		if err != nil {
			return err
		}
		return checkStatus(resp, http.StatusCreated, "PUT")
	})
}

// pull GETs the blob once, counting its bytes.
func (b *bench) pull(ctx context.Context) (transfer, error) {
	return b.originTransfer(ctx, b.size, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.origin.URL()+"/v2/"+repo+"/blobs/"+b.digest, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := checkStatus(resp, http.StatusOK, "GET blob"); err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			return fmt.Errorf("GET blob: after %d bytes: %w", n, err)
		}
		if n != b.size {
			return fmt.Errorf("GET blob: %w: %d of %d bytes", errShort, n, b.size)
		}
		return nil
	})
}

// originTransfer times fn while sampling the origin's RSS, and counts the
// storage operations and namenode RPCs it caused.
func (b *bench) originTransfer(ctx context.Context, size int64, fn func() error) (transfer, error) {
	t := transfer{bytes: size}
	opsBefore, err := storageOps(ctx, b.origin.URL())
	if err != nil {
		return t, err
	}
	sampler := procstat.StartSampler([]int{b.origin.PID()}, 20*time.Millisecond)
	var took time.Duration
	t.rpcs, err = b.measured(ctx, func() error {
		start := time.Now()
		err := fn()
		took = time.Since(start)
		return err
	})
	t.took = took
	t.peakRSS = sampler.Stop()[0]
	if err != nil {
		return t, err
	}
	opsAfter, err := storageOps(ctx, b.origin.URL())
	if err != nil {
		return t, err
	}
	t.ops = diff(opsBefore, opsAfter)
	return t, nil
}

func do(ctx context.Context, method, u string, body io.Reader, size int64, header map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	// The figures need only status and headers: keep the (small) body for
	// error messages and free the connection.
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

func resolve(base, loc string) (*url.URL, error) {
	if loc == "" {
		return nil, fmt.Errorf("no Location header")
	}
	b, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	l, err := url.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("bad Location %q: %w", loc, err)
	}
	return b.ResolveReference(l), nil
}

func diff(before, after map[string]int64) map[string]int64 {
	d := map[string]int64{}
	for k, v := range after {
		if n := v - before[k]; n != 0 {
			d[k] = n
		}
	}
	return d
}
