package objectstore

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// registry:2 and the origin keep the same layout on an object store, so a
// site can point Shoal at the bucket registry:2 has been serving, and
// back: each serves what the other pushed to the same prefix.
func TestRegistry2AndOriginShareABucket(t *testing.T) {
	for _, kind := range []string{testenv.KindS3, testenv.KindAzure} {
		t.Run(kind, func(t *testing.T) {
			o := testenv.ObjectStoreServer(t, kind)
			const prefix = "/registry"
			reg := testenv.RegistryOnStore(t, o, prefix)
			origin := testenv.Origin(t, o.StorageURL(prefix))

			t.Run("origin serves what registry:2 pushed", func(t *testing.T) {
				pushed := pushImage(t, reg.Addr, "fromregistry/app:v1")
				checkImage(t, origin.Addr, "fromregistry/app:v1", pushed)
			})
			t.Run("registry:2 serves what the origin pushed", func(t *testing.T) {
				pushed := pushImage(t, origin.Addr, "fromorigin/app:v1")
				checkImage(t, reg.Addr, "fromorigin/app:v1", pushed)
			})
		})
	}
}

func craneOpts(t *testing.T) []crane.Option {
	return []crane.Option{crane.Insecure, crane.WithContext(t.Context())}
}

// pushImage pushes a random three-layer image to addr/ref and returns its
// manifest digest. opts add to craneOpts (credentials, say).
func pushImage(t *testing.T, addr, ref string, opts ...crane.Option) string {
	t.Helper()
	img, err := random.Image(512<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := crane.Push(img, addr+"/"+ref, append(craneOpts(t), opts...)...); err != nil {
		t.Fatalf("pushing %s to %s: %v", ref, addr, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// checkImage pulls addr/ref, wants it to resolve to digest, and reads and
// verifies every blob. opts add to craneOpts.
func checkImage(t *testing.T, addr, ref, digest string, opts ...crane.Option) {
	t.Helper()
	opts = append(craneOpts(t), opts...)
	got, err := crane.Digest(addr+"/"+ref, opts...)
	if err != nil {
		t.Fatalf("resolving %s on %s: %v", ref, addr, err)
	}
	if got != digest {
		t.Errorf("%s on %s resolves to %s, want %s", ref, addr, got, digest)
	}
	img, err := crane.Pull(addr+"/"+ref, opts...)
	if err != nil {
		t.Fatalf("pulling %s from %s: %v", ref, addr, err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("%s pulled from %s is not intact: %v", ref, addr, err)
	}
}
