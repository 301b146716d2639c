package auth_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// clientTimeout bounds one registry client operation (a push).
const clientTimeout = 2 * time.Minute

// image is a pushed fixture, with every byte a leak check looks for.
type image struct {
	repo, tag string
	digest    string // of the manifest
	manifest  []byte
	mediaType string
	config    blob
	layers    []blob
	// referrer is the digest of an artifact manifest whose subject is
	// this image; empty when none was pushed.
	referrer string
}

// blob is a blob's digest and content.
type blob struct {
	digest string
	data   []byte
}

// secrets are the byte strings no denied answer may contain: the
// manifest, the config, and the start of every layer (layers are gzip of
// random bytes, so 64 bytes of one appear nowhere else).
func (im *image) secrets() [][]byte {
	s := [][]byte{im.manifest, im.config.data}
	for _, l := range im.layers {
		s = append(s, l.data[:min(64, len(l.data))])
	}
	return s
}

// pushFixtures pushes, as user ci from pushAddr (the one machine allowed
// to push), a public image, a private one with a referrer, and a second
// private repository.
func (e *env) pushFixtures(ctx context.Context) error {
	var err error
	if e.public, err = e.pushImage(ctx, "path1/app", "v1", false); err != nil {
		return err
	}
	if e.private, err = e.pushImage(ctx, "path2/app", "v1", true); err != nil {
		return err
	}
	e.other, err = e.pushImage(ctx, "path2/other", "v1", false)
	return err
}

// pushImage pushes an OCI image of two random layers as repo:tag and,
// with referrer, an artifact that refers to it.
func (e *env) pushImage(ctx context.Context, repo, tag string, referrer bool) (*image, error) {
	img, err := random.Image(256<<10, 2)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	ref, err := name.ParseReference(e.origin.Addr+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return nil, err
	}
	opts := pushOptions(ctx, "ci", pushAddr)
	if err := remote.Write(ref, img, opts...); err != nil {
		return nil, fmt.Errorf("pushing %s: %w", ref, err)
	}
	im := &image{repo: repo, tag: tag, mediaType: string(types.OCIManifestSchema1)}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	im.digest = d.String()
	if im.manifest, err = img.RawManifest(); err != nil {
		return nil, err
	}
	cd, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	im.config.digest = cd.String()
	if im.config.data, err = img.RawConfigFile(); err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		im.layers = append(im.layers, blob{digest: ld.String(), data: b})
	}
	if !referrer {
		return im, nil
	}
	size, err := img.Size()
	if err != nil {
		return nil, err
	}
	art := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	art = mutate.ConfigMediaType(art, "application/vnd.shoal.e2e.signature.v1+json")
	art, err = mutate.AppendLayers(art, static.NewLayer([]byte("signature of "+im.digest), "application/vnd.shoal.e2e.sig"))
	if err != nil {
		return nil, err
	}
	art = mutate.Subject(art, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: d, Size: size}).(v1.Image)
	ad, err := art.Digest()
	if err != nil {
		return nil, err
	}
	aref, err := name.ParseReference(e.origin.Addr+"/"+repo+"@"+ad.String(), name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(aref, art, opts...); err != nil {
		return nil, fmt.Errorf("pushing the referrer %s: %w", aref, err)
	}
	im.referrer = ad.String()
	return im, nil
}

// pushOptions are go-containerregistry options for user's Basic
// credentials (it does the token dance with them) over connections from
// the local address from.
func pushOptions(ctx context.Context, user, from string) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(&authn.Basic{Username: user, Password: passwords[user]}),
		remote.WithTransport(transportFrom(from)),
	}
}

// transportFrom is an HTTP transport whose connections come from the local
// address from (127.0.0.1 or 127.0.0.2): the machine identity the origin's
// cidr rules see.
func transportFrom(from string) *http.Transport {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	return &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
}
