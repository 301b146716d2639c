// Command images builds Shoal's OCI images (`make images`): for each
// command, a static binary (CGO_ENABLED=0) per platform, cross-compiled
// with GOARCH, in a scratch image that runs as a non-root user, and one
// multi-platform index per command, pushed to any registry (Shoal's own
// origin included) or, without --registry, written as an OCI image layout.
// No Dockerfile, no base image from the internet: go-containerregistry
// assembles the images from the binaries.
//
//	go run ./hack/images --registry 127.0.0.1:5000/shoal [--tag v1] [--platforms linux/amd64,linux/arm64]
//
// It is a build tool, not one of Shoal's shipped binaries.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"unicode"

	"github.com/shoal-dev/shoal/internal/checkout"
)

// defaultCommands are the commands an image is built for.
var defaultCommands = []string{"origin", "tracker", "peer-agent", "shoalctl"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "images:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	registry := fs.String("registry", os.Getenv("REGISTRY"), "push to REGISTRY/<command>:TAG, e.g. 127.0.0.1:5000/shoal or ghcr.io/org ($REGISTRY); empty: write an OCI layout to --out")
	tag := fs.String("tag", "", "image tag (default: git describe --always --dirty)")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated OS/ARCH list of the index")
	commands := fs.String("commands", strings.Join(defaultCommands, ","), "comma-separated cmd/ names to build images of")
	out := fs.String("out", "", "OCI image layout directory when --registry is empty (default <checkout>/.cache/images)")
	insecure := fs.Bool("insecure", false, "allow plain HTTP to the registry (implied for localhost and 127.0.0.1)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	root, err := checkout.FromWorkingDir()
	if err != nil {
		return err
	}
	plats, err := parsePlatforms(*platforms)
	if err != nil {
		return err
	}
	src, err := sourceInfo(ctx, root)
	if err != nil {
		return err
	}
	if *tag == "" {
		*tag = src.version
	}
	opts := Options{Root: root, Commands: splitList(*commands), Platforms: plats, Source: src, Log: os.Stdout}
	work, err := os.MkdirTemp("", "shoal-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	opts.WorkDir = work
	indexes, err := Build(ctx, opts)
	if err != nil {
		return err
	}
	if *registry == "" {
		dir := *out
		if dir == "" {
			dir = filepath.Join(root, ".cache", "images")
		}
		return WriteLayout(dir, *tag, indexes, os.Stdout)
	}
	return Push(ctx, *registry, *tag, *insecure, indexes, os.Stdout)
}

// splitList splits a comma-separated flag value.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
}
