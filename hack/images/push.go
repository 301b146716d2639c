package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push pushes each command's index as <registry>/<command>:<tag>, with
// the credentials of the Docker config ($DOCKER_CONFIG, ~/.docker) for
// registries that want them.
func Push(ctx context.Context, registry, tag string, insecure bool, indexes map[string]v1.ImageIndex, log io.Writer) error {
	registry = strings.TrimRight(registry, "/")
	opts := []name.Option{}
	if insecure || loopback(registry) {
		opts = append(opts, name.Insecure)
	}
	for _, c := range sortedKeys(indexes) {
		ref, err := name.NewTag(registry+"/"+c+":"+tag, opts...)
		if err != nil {
			return fmt.Errorf("image name for %s: %w", c, err)
		}
		if err := remote.WriteIndex(ref, indexes[c], remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
		d, err := indexes[c].Digest()
		if err != nil {
			return err
		}
		fmt.Fprintf(log, "pushed %s@%s\n", ref, d)
	}
	return nil
}

// loopback reports whether the registry's host is this machine, where
// plain HTTP is as safe as it gets (docker treats 127.0.0.0/8 so too).
func loopback(registry string) bool {
	host, _, _ := strings.Cut(registry, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// WriteLayout writes the indexes into an OCI image layout at dir, each
// annotated with its name and tag, for `crane push` or a look.
func WriteLayout(dir, tag string, indexes map[string]v1.ImageIndex, log io.Writer) error {
	p, err := layout.FromPath(dir)
	if errors.Is(err, os.ErrNotExist) {
		p, err = layout.Write(dir, empty.Index)
	}
	if err != nil {
		return fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	for _, c := range sortedKeys(indexes) {
		ann := map[string]string{"org.opencontainers.image.ref.name": c + ":" + tag}
		if err := p.AppendIndex(indexes[c], layout.WithAnnotations(ann)); err != nil {
			return fmt.Errorf("writing %s into %s: %w", c, dir, err)
		}
		fmt.Fprintf(log, "wrote %s:%s into the OCI layout %s\n", c, tag, dir)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
