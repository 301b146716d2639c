package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options are what Build builds.
type Options struct {
	// Root is the checkout.
	Root string
	// Commands are cmd/ names, one image (index) each.
	Commands []string
	// Platforms are the index's platforms; only linux is supported (the
	// binaries are static Linux executables).
	Platforms []v1.Platform
	// Source labels the images (revision, version, time).
	Source Source
	// WorkDir receives the binaries.
	WorkDir string
	// Log receives a line per step.
	Log io.Writer
}

// Source is what the images say about the code they were built from.
type Source struct {
	revision string
	version  string
	// created is the commit's time, so that a rebuild of one commit gives
	// the same image digests.
	created time.Time
}

// sourceInfo reads the checkout's commit, version and commit time from
// git; outside a git checkout (a source tarball) they are "unknown".
func sourceInfo(ctx context.Context, root string) (Source, error) {
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	s := Source{revision: git("rev-parse", "HEAD"), version: git("describe", "--tags", "--always", "--dirty")}
	if sec, err := strconv.ParseInt(git("log", "-1", "--format=%ct"), 10, 64); err == nil {
		s.created = time.Unix(sec, 0).UTC()
	}
	if s.revision == "" {
		s.revision, s.version = "unknown", "dev"
	}
	return s, nil
}

// parsePlatforms parses "linux/amd64,linux/arm64".
func parsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, p := range splitList(s) {
		os, arch, ok := strings.Cut(p, "/")
		if !ok || os != "linux" || arch == "" {
			return nil, fmt.Errorf("platform %q: want linux/ARCH (the binaries are static Linux executables)", p)
		}
		arch, variant, _ := strings.Cut(arch, "/")
		out = append(out, v1.Platform{OS: os, Architecture: arch, Variant: variant})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no platforms in %q", s)
	}
	return out, nil
}

// Build compiles every command for every platform and returns one index
// per command, keyed by command name.
func Build(ctx context.Context, o Options) (map[string]v1.ImageIndex, error) {
	// Binaries per platform, built with one `go build` each so that the
	// shared packages compile once per platform.
	bins := map[string]string{} // "<arch>/<command>" -> path
	for _, p := range o.Platforms {
		dir := filepath.Join(o.WorkDir, p.Architecture+p.Variant)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		fmt.Fprintf(o.Log, "go build %s for %s/%s (static, CGO_ENABLED=0)\n", strings.Join(o.Commands, ", "), p.OS, p.Architecture)
		if err := goBuild(ctx, o.Root, dir, p, o.Commands); err != nil {
			return nil, err
		}
		for _, c := range o.Commands {
			bins[p.Architecture+p.Variant+"/"+c] = filepath.Join(dir, c)
		}
	}
	indexes := map[string]v1.ImageIndex{}
	for _, c := range o.Commands {
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		for _, p := range o.Platforms {
			img, err := commandImage(c, bins[p.Architecture+p.Variant+"/"+c], p, o.Source)
			if err != nil {
				return nil, err
			}
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
				Add:        img,
				Descriptor: v1.Descriptor{Platform: &p},
			})
		}
		indexes[c] = mutate.Annotations(idx, labels(c, o.Source)).(v1.ImageIndex)
	}
	return indexes, nil
}

// goBuild builds static binaries of commands for platform p into dir.
func goBuild(ctx context.Context, root, dir string, p v1.Platform, commands []string) error {
	args := []string{"build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", dir + string(filepath.Separator)}
	for _, c := range commands {
		args = append(args, "./cmd/"+c)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if p.Architecture == "arm" && p.Variant != "" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s (GOARCH=%s): %w\n%s", strings.Join(args, " "), p.Architecture, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// labels are the OCI annotations of an image and its index.
func labels(command string, s Source) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "shoal-" + command,
		"org.opencontainers.image.description": "Shoal " + command + " (P2P container registry), a static binary on scratch, run as a non-root user",
		"org.opencontainers.image.source":      "https://github.com/shoal-dev/shoal",
		"org.opencontainers.image.revision":    s.revision,
		"org.opencontainers.image.version":     s.version,
		"org.opencontainers.image.created":     s.created.Format(time.RFC3339),
	}
}
