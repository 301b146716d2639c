package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The user the images run as: not root, the number distroless images use
// for "nonroot", so that volume permissions set up for those fit.
const (
	uid      = 65532
	userName = "nonroot"
)

// caBundle is the build host's CA certificates, copied into the images
// so that the origin can reach object stores over HTTPS (Debian's path).
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// commandImage is one platform's image of a command: its binary in a
// scratch root file system with a non-root user.
func commandImage(command, binary string, p v1.Platform, s Source) (v1.Image, error) {
	layer, err := rootLayer(command, binary, s.created)
	if err != nil {
		return nil, fmt.Errorf("image of %s for %s: %w", command, p.Architecture, err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: s.created},
			CreatedBy: "hack/images: /usr/local/bin/" + command + " (go build, CGO_ENABLED=0)",
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: s.created}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", uid, uid),
		Entrypoint: []string{"/usr/local/bin/" + command},
		Env:        []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=" + caBundle},
		WorkingDir: "/home/" + userName,
		Labels:     labels(command, s),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, labels(command, s)).(v1.Image), nil
}

// rootLayer is the image's one layer: the binary, passwd and group files
// naming the non-root user, the CA bundle, /tmp, and the directories the
// binaries write to by default, owned by that user.
func rootLayer(command, binary string, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64, owner int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: owner, Gid: owner, ModTime: mtime})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []struct {
		name  string
		mode  int64
		owner int
	}{
		{"etc", 0o755, 0}, {"etc/ssl", 0o755, 0}, {"etc/ssl/certs", 0o755, 0},
		{"home", 0o755, 0}, {"home/" + userName, 0o755, uid},
		{"tmp", 0o1777, 0},
		{"usr", 0o755, 0}, {"usr/local", 0o755, 0}, {"usr/local/bin", 0o755, 0},
		{"var", 0o755, 0}, {"var/lib", 0o755, 0}, {"var/lib/shoal", 0o755, uid},
		{"var/cache", 0o755, 0}, {"var/cache/shoal", 0o755, uid}, {"var/cache/shoal-agent", 0o755, uid},
	} {
		if err := dir(d.name, d.mode, d.owner); err != nil {
			return nil, err
		}
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:/home/%s:/sbin/nologin\n", userName, uid, uid, userName, userName)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\n", userName, uid)
	if err := file("etc/passwd", 0o644, []byte(passwd)); err != nil {
		return nil, err
	}
	if err := file("etc/group", 0o644, []byte(group)); err != nil {
		return nil, err
	}
	if ca, err := os.ReadFile(caBundle); err == nil {
		if err := file(caBundle[1:], 0o644, ca); err != nil {
			return nil, err
		}
	} else {
		fmt.Fprintf(os.Stderr, "images: no %s on this machine (%v): the images trust no CA, so HTTPS to object stores fails (apt-get install ca-certificates)\n", caBundle, err)
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	if err := file("usr/local/bin/"+command, 0o755, bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching, tarball.WithCompressionLevel(gzip.BestSpeed))
}
