// Command hdfsbench measures an origin whose storage is HDFS next to an
// independent HDFS client on the same cluster, and prints the figures of
// issue 3:
//
//   - push and pull throughput of a 1 GiB blob through the origin (POST, one
//     PATCH with the whole blob, PUT; then one GET), next to Debian's hdfs-cli
//     (colinmarc's gohdfs command: `hdfs put` and `hdfs cat`) moving the same
//     bytes; goal: the origin at least 80% of hdfs-cli both ways;
//   - the origin's RSS before and at its peak while streaming (sampled from
//     /proc every 20 ms), which should stay flat whatever the blob size;
//   - namenode calls per pushed and per pulled layer, two ways: the origin's
//     storage driver operations (shoal_storage_operation_duration_seconds_count
//     from its /metrics, by operation; each maps to one or a few namenode
//     calls, docs/hdfs.md has the table) and the namenode's own RPC counters
//     by method (its /jmx RpcDetailedActivity bean), for hdfs-cli too.
//
// It starts its own MiniDFSCluster (e2e/hdfs: 3 datanodes, replication 2,
// Hadoop's 128 MiB blocks), builds and starts cmd/origin on it, and stops
// both at the end, on error or on interrupt. Run it from the module root:
//
//	go run ./e2e/hdfsbench                 # 1 GiB, 3 runs: a few minutes
//	go run ./e2e/hdfsbench -size-mib 128 -runs 1   # a smoke run
//
// Needs java and mvn (for the cluster) and hdfs-cli (apt-get install
// hdfs-cli; its binary is named hdfs). The exit status is non-zero only when
// a figure could not be measured; missing the 80% goal is a figure.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/e2e/hdfs"
	"github.com/shoal-dev/shoal/e2e/procstat"
	"github.com/shoal-dev/shoal/e2e/testenv"
)

const mib = 1 << 20

type config struct {
	sizeMiB int64
	runs    int
	cli     string
	workDir string
	settle  time.Duration
}

func main() {
	var cfg config
	flag.Int64Var(&cfg.sizeMiB, "size-mib", 1024, "blob size in MiB")
	flag.IntVar(&cfg.runs, "runs", 3, "runs of each transfer; the median is reported")
	flag.StringVar(&cfg.cli, "hdfs-cli", "hdfs", "hdfs-cli binary (Debian package hdfs-cli)")
	flag.StringVar(&cfg.workDir, "work-dir", "", "directory for the blob file and logs; empty makes a temporary one")
	flag.DurationVar(&cfg.settle, "jmx-settle", 11*time.Second, "wait before each reading of the namenode's RPC counters (Hadoop refreshes them every 10 s)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		slog.Error("hdfsbench failed", "err", err)
		os.Exit(1)
	}
}

// transfer is one timed push or pull.
type transfer struct {
	bytes   int64
	took    time.Duration
	peakRSS int64            // origin only
	ops     map[string]int64 // origin's driver operations during it
	rpcs    rpcCounts        // namenode RPCs during it
}

func (t transfer) mibps() float64 { return float64(t.bytes) / mib / t.took.Seconds() }

func run(ctx context.Context, cfg config) error {
	cli, err := findHDFSCLI(cfg.cli)
	if err != nil {
		return err
	}
	ws, err := testenv.FindWorkspace()
	if err != nil {
		return err
	}
	work := cfg.workDir
	if work == "" {
		if work, err = os.MkdirTemp("", "shoal-hdfsbench-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	size := cfg.sizeMiB * mib

	slog.Info("building cmd/origin")
	bin, err := ws.Build(ctx, "origin", testenv.BuildOptions{})
	if err != nil {
		return err
	}
	slog.Info("writing the blob file", "MiB", cfg.sizeMiB)
	blobFile := filepath.Join(work, "blob")
	dig, err := writeBlobFile(blobFile, size)
	if err != nil {
		return err
	}

	slog.Info("starting MiniDFSCluster")
	start := time.Now()
	cluster, err := hdfs.Start(ctx, hdfs.DefaultOptions())
	if err != nil {
		return err
	}
	defer cluster.Stop()
	slog.Info("MiniDFSCluster up", "namenode", cluster.NameNode(), "took", time.Since(start).Round(time.Millisecond))
	nn, err := findNameNodeJMX(ctx, cluster)
	if err != nil {
		slog.Warn("namenode RPC counts unavailable", "err", err)
	}

	origin, err := testenv.StartOrigin(ctx, testenv.OriginOptions{Binary: bin, Storage: cluster.URL("/bench/origin"), Dir: work})
	if err != nil {
		return err
	}
	defer func() {
		if err := origin.Stop(testenv.DefaultStopTimeout); err != nil {
			slog.Warn("stopping origin", "err", err)
		}
	}()
	idle, err := procstat.ReadStatus(origin.PID())
	if err != nil {
		return err
	}

	c := &bench{cli: cli, cluster: cluster, origin: origin, file: blobFile, size: size, digest: dig}
	var cliPut, cliCat, push, pull []transfer
	for i := range cfg.runs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		slog.Info("run", "n", i+1, "of", cfg.runs)
		// Alternate which client goes first, so that neither always
		// finds the machine warmer.
		steps := []func() error{
			func() error { t, err := c.cliPut(ctx, i); cliPut = append(cliPut, t); return err },
			func() error { t, err := c.cliCat(ctx, i); cliCat = append(cliCat, t); return err },
			func() error { t, err := c.push(ctx, i); push = append(push, t); return err },
			func() error { t, err := c.pull(ctx); pull = append(pull, t); return err },
		}
		if i%2 == 1 {
			steps = append(steps[2:], steps[:2]...)
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
	}
	f := figures{idleRSS: idle.RSS, cliPut: cliPut, cliCat: cliCat, push: push, pull: pull}
	if nn != nil {
		// A pass of its own: the counters need a pause before each
		// reading, which must not be inside the timed runs.
		slog.Info("counting namenode RPCs: one more transfer of each kind", "pause", cfg.settle)
		nn.settle = cfg.settle
		c.nn = nn
		run := cfg.runs
		for _, step := range []struct {
			dst *rpcCounts
			fn  func() (transfer, error)
		}{
			{&f.rpcCLIPut, func() (transfer, error) { return c.cliPut(ctx, run) }},
			{&f.rpcCLICat, func() (transfer, error) { return c.cliCat(ctx, run) }},
			{&f.rpcPush, func() (transfer, error) { return c.push(ctx, run) }},
			{&f.rpcPull, func() (transfer, error) { return c.pull(ctx) }},
		} {
			t, err := step.fn()
			if err != nil {
				return err
			}
			*step.dst = t.rpcs
		}
	} else {
		f.rpcCLIPut.err, f.rpcCLICat.err, f.rpcPush.err, f.rpcPull.err = err, err, err, err
	}
	f.print(os.Stdout, cfg, c)
	return nil
}

// writeBlobFile writes size pseudo-random bytes to name and returns their
// digest. Random, so that nothing on the way can compress them.
func writeBlobFile(name string, size int64) (string, error) {
	f, err := os.Create(name)
	if err != nil {
		return "", fmt.Errorf("writing the blob file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rand.NewChaCha8([32]byte{1}), size)); err != nil {
		return "", fmt.Errorf("writing the blob file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("writing the blob file: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func median(ts []transfer, f func(transfer) float64) float64 {
	vs := make([]float64, len(ts))
	for i, t := range ts {
		vs[i] = f(t)
	}
	slices.Sort(vs)
	if len(vs) == 0 {
		return 0
	}
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

var errShort = errors.New("short transfer")

// checkStatus returns an error quoting the body unless resp has status want.
func checkStatus(resp *http.Response, want int, what string) error {
	if resp.StatusCode == want {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Errorf("%s: %s, want %d: %s", what, resp.Status, want, b)
}
