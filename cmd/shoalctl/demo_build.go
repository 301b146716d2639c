package main

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

	"github.com/shoal-dev/shoal/internal/checkout"
)

// demoBinaries are the programs the demo runs.
var demoBinaries = []string{"origin", "tracker", "peer-agent"}

// findBinaries returns the path of each of demoBinaries: from binDir when
// given; else built with `go build` from the Shoal checkout around the
// working directory into its .cache/bin; else those next to shoalctl's
// own executable (an installed release).
func findBinaries(ctx context.Context, binDir string, out io.Writer) (map[string]string, error) {
	if binDir != "" {
		return binariesIn(binDir)
	}
	if root, err := checkout.FromWorkingDir(); err == nil {
		return buildBinaries(ctx, root, filepath.Join(root, ".cache", "bin"), out)
	}
	if self, err := os.Executable(); err == nil {
		if bins, err := binariesIn(filepath.Dir(self)); err == nil {
			return bins, nil
		}
	}
	return nil, errors.New("no Shoal checkout around the working directory to build origin, tracker and peer-agent from, " +
		"and they are not next to shoalctl: run `go run ./cmd/shoalctl demo` in a checkout, or give --bin-dir")
}

func binariesIn(dir string) (map[string]string, error) {
	bins := map[string]string{}
	for _, name := range demoBinaries {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("--bin-dir %s: %w", dir, err)
		}
		bins[name] = p
	}
	return bins, nil
}

// slowBuild is how long a build runs before the demo explains why: the
// first one downloads the dependencies and compiles them, minutes on a
// small machine; later ones only relink what changed.
const slowBuild = 5 * time.Second

// buildBinaries runs one `go build` for demoBinaries into dir.
func buildBinaries(ctx context.Context, root, dir string, out io.Writer) (map[string]string, error) {
	if _, err := exec.LookPath("go"); err != nil {
		return nil, fmt.Errorf("building the demo's binaries needs the go command: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, name := range demoBinaries {
		args = append(args, "./cmd/"+name)
	}
	// Binaries already there mean the dependencies are compiled and in
	// Go's cache: the build relinks what changed.
	_, err := binariesIn(dir)
	first := err != nil
	fmt.Fprintf(out, "building %s into %s\n", strings.Join(demoBinaries, ", "), dir)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("go build: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	start := time.Now()
	tick := time.NewTicker(slowBuild)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(log.String()))
			}
			return binariesIn(dir)
		case <-tick.C:
			if first && time.Since(start) < 2*slowBuild {
				fmt.Fprintln(out, "  still building: the first build downloads Shoal's dependencies and compiles them (a few minutes); later runs take seconds")
			} else {
				fmt.Fprintf(out, "  still building (%s)\n", time.Since(start).Round(time.Second))
			}
			tick.Reset(max(slowBuild, time.Since(start)/2))
		}
	}
}
