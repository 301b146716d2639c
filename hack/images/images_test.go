package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// TestImagesPushedToAnOriginPullAsAMultiArchIndex builds the tracker's
// image (the smallest command; the others are built the same way) for
// amd64 and arm64, pushes it to a started Shoal origin, and pulls the
// index back: both platforms, each a non-root scratch image whose one
// binary is a static executable for its architecture.
func TestImagesPushedToAnOriginPullAsAMultiArchIndex(t *testing.T) {
	o := testenv.Origin(t, "file://"+filepath.Join(t.TempDir(), "storage"))
	root := testenv.ForTest(t).Root
	plats, err := parsePlatforms("linux/amd64,linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	src := Source{revision: "0123456789abcdef", version: "v0.0.0-test", created: time.Unix(1700000000, 0).UTC()}
	var log bytes.Buffer
	indexes, err := Build(t.Context(), Options{Root: root, Commands: []string{"tracker"}, Platforms: plats, Source: src, WorkDir: t.TempDir(), Log: &log})
	if err != nil {
		t.Fatalf("building the tracker's images: %v\n%s", err, log.String())
	}
	if err := Push(t.Context(), o.Addr+"/shoal", "test", false, indexes, &log); err != nil {
		t.Fatalf("pushing to the origin: %v\n%s", err, log.String())
	}

	ref, err := name.ParseReference(o.Addr+"/shoal/tracker:test", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("pulling the index back: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %s, want %s", im.MediaType, types.OCIImageIndex)
	}
	if got := im.Annotations["org.opencontainers.image.revision"]; got != src.revision {
		t.Errorf("index revision annotation %q, want %q", got, src.revision)
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	seen := map[string]bool{}
	for _, desc := range im.Manifests {
		if desc.Platform == nil {
			t.Errorf("index entry %s has no platform", desc.Digest)
			continue
		}
		arch := desc.Platform.Architecture
		seen[arch] = true
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatalf("pulling the %s image: %v", arch, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatalf("pulling the %s config: %v", arch, err)
		}
		if cf.OS != "linux" || cf.Architecture != arch {
			t.Errorf("the %s entry's config says %s/%s", arch, cf.OS, cf.Architecture)
		}
		if cf.Config.User != "65532:65532" {
			t.Errorf("the %s image runs as %q, want the non-root 65532:65532", arch, cf.Config.User)
		}
		if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/usr/local/bin/tracker" {
			t.Errorf("the %s image's entrypoint is %q, want /usr/local/bin/tracker", arch, cf.Config.Entrypoint)
		}
		if cf.Config.Labels["org.opencontainers.image.version"] != src.version || cf.Config.Labels["org.opencontainers.image.title"] != "shoal-tracker" {
			t.Errorf("the %s image's labels: %v", arch, cf.Config.Labels)
		}
		if !cf.Created.Time.Equal(src.created) {
			t.Errorf("the %s image was created %s, want the commit's time %s (reproducible digests)", arch, cf.Created.Time, src.created)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("the %s image has %d layers (%v), want one on scratch", arch, len(layers), err)
		}
		files := layerFiles(t, layers[0])
		bin, ok := files["usr/local/bin/tracker"]
		if !ok {
			t.Fatalf("the %s image has no usr/local/bin/tracker; it has %v", arch, sortedKeys(files))
		}
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("the %s image's tracker is not an ELF executable: %v", arch, err)
		}
		if f.Machine != machines[arch] {
			t.Errorf("the %s image's tracker is built for %s, want %s", arch, f.Machine, machines[arch])
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("the %s image's tracker is dynamically linked (it has an interpreter): scratch has no libc", arch)
			}
		}
		if _, ok := files["etc/passwd"]; !ok {
			t.Errorf("the %s image has no etc/passwd naming its user", arch)
		}
	}
	if !seen["amd64"] || !seen["arm64"] || len(im.Manifests) != 2 {
		t.Errorf("the index lists %d images for %v, want amd64 and arm64", len(im.Manifests), seen)
	}
}

// layerFiles reads a layer's regular files.
func layerFiles(t *testing.T, l v1.Layer) map[string][]byte {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("reading the layer: %v", err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
}

func TestParsePlatforms(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"linux/amd64,linux/arm64", 2, true},
		{"linux/arm/v7", 1, true},
		{"windows/amd64", 0, false},
		{"amd64", 0, false},
		{"", 0, false},
	} {
		got, err := parsePlatforms(tc.in)
		if (err == nil) != tc.ok || len(got) != tc.want {
			t.Errorf("parsePlatforms(%q) = %v, %v; want %d platforms, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
