// Package interop checks Shoal's origin against real clients and against
// the reference registry: crane pushing, mounting and pulling, registry:2
// and the origin reading each other's storage, and two origins continuing
// each other's upload sessions.
package interop

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// fixture is content pushed through one server, recorded so that it can
// be checked through another.
type fixture struct {
	// tags maps "repo:tag" to the manifest digest it must resolve to.
	tags map[string]string
	// manifests maps "repo@digest" to the exact manifest bytes pushed.
	manifests map[string][]byte
	// images and indexes are "repo@digest" references to validate fully
	// (every blob read and its digest checked).
	images, indexes []string
	// repoTags maps a repository to its full tag list.
	repoTags map[string][]string
}

func craneOpts(t testing.TB) []crane.Option {
	return []crane.Option{crane.Insecure, crane.WithContext(t.Context())}
}

// pushFixture pushes a multi-layer Docker image under two tags and a
// two-platform OCI index to the registry at addr.
func pushFixture(t *testing.T, addr string) fixture {
	t.Helper()
	f := fixture{tags: map[string]string{}, manifests: map[string][]byte{}, repoTags: map[string][]string{}}

	img, err := random.Image(256<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	imgRepo := addr + "/interop/app"
	if err := crane.Push(img, imgRepo+":v1", craneOpts(t)...); err != nil {
		t.Fatalf("pushing image to %s: %v", imgRepo, err)
	}
	if err := crane.Tag(imgRepo+":v1", "latest", craneOpts(t)...); err != nil {
		t.Fatalf("tagging %s:v1 as latest: %v", imgRepo, err)
	}
	dig := mustDigest(t, img)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	f.tags["interop/app:v1"] = dig
	f.tags["interop/app:latest"] = dig
	f.manifests["interop/app@"+dig] = raw
	f.images = append(f.images, "interop/app@"+dig)
	f.repoTags["interop/app"] = []string{"latest", "v1"}

	idx, err := random.Index(64<<10, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(addr+"/interop/multi:index", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("pushing index to %s: %v", ref, err)
	}
	idxDig, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	idxRaw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	f.tags["interop/multi:index"] = idxDig.String()
	f.manifests["interop/multi@"+idxDig.String()] = idxRaw
	f.indexes = append(f.indexes, "interop/multi@"+idxDig.String())
	f.repoTags["interop/multi"] = []string{"index"}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		child, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		childRaw, err := child.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		f.manifests["interop/multi@"+d.Digest.String()] = childRaw
		f.images = append(f.images, "interop/multi@"+d.Digest.String())
	}
	return f
}

// checkFixture verifies through the registry at addr that everything in f
// is there intact: tags resolve to the same digests, manifests are
// byte-identical by digest and by tag, every blob reads back with its
// digest, tag lists and the catalog are complete.
func checkFixture(t *testing.T, addr string, f fixture) {
	t.Helper()
	for tagRef, want := range f.tags {
		got, err := crane.Digest(addr+"/"+tagRef, craneOpts(t)...)
		if err != nil {
			t.Errorf("resolving %s: %v", tagRef, err)
			continue
		}
		if got != want {
			t.Errorf("%s resolves to %s, want %s", tagRef, got, want)
		}
		repo, _, _ := strings.Cut(tagRef, ":")
		byTag, err := crane.Manifest(addr+"/"+tagRef, craneOpts(t)...)
		if err != nil {
			t.Errorf("getting manifest %s: %v", tagRef, err)
			continue
		}
		if wantRaw := f.manifests[repo+"@"+want]; string(byTag) != string(wantRaw) {
			t.Errorf("manifest %s differs from the one pushed:\n got %s\nwant %s", tagRef, byTag, wantRaw)
		}
	}
	for digRef, want := range f.manifests {
		got, err := crane.Manifest(addr+"/"+digRef, craneOpts(t)...)
		if err != nil {
			t.Errorf("getting manifest %s: %v", digRef, err)
			continue
		}
		if string(got) != string(want) {
			t.Errorf("manifest %s differs from the one pushed:\n got %s\nwant %s", digRef, got, want)
		}
	}
	for _, ref := range f.images {
		img, err := crane.Pull(addr+"/"+ref, craneOpts(t)...)
		if err != nil {
			t.Errorf("pulling %s: %v", ref, err)
			continue
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("image %s pulled from %s is not intact: %v", ref, addr, err)
		}
		checkBlobs(t, addr, ref, img)
	}
	for _, ref := range f.indexes {
		r, err := name.ParseReference(addr+"/"+ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Index(r, remote.WithContext(t.Context()))
		if err != nil {
			t.Errorf("pulling index %s: %v", ref, err)
			continue
		}
		if err := validate.Index(idx); err != nil {
			t.Errorf("index %s pulled from %s is not intact: %v", ref, addr, err)
		}
	}
	for repo, want := range f.repoTags {
		got, err := crane.ListTags(addr+"/"+repo, craneOpts(t)...)
		if err != nil {
			t.Errorf("listing tags of %s: %v", repo, err)
			continue
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("tags of %s = %q, want %q", repo, got, want)
		}
	}
	catalog, err := crane.Catalog(addr, craneOpts(t)...)
	if err != nil {
		t.Errorf("listing the catalog: %v", err)
	}
	for repo := range f.repoTags {
		if !slices.Contains(catalog, repo) {
			t.Errorf("catalog %q lacks %s", catalog, repo)
		}
	}
}

// checkBlobs fetches the config and every layer of img with plain GETs and
// checks size and sha256, independently of crane's own verification.
func checkBlobs(t *testing.T, addr, ref string, img v1.Image) {
	t.Helper()
	repo, _, _ := strings.Cut(ref, "@")
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		body := getBlob(t, addr, repo, d.Digest.String())
		if int64(len(body)) != d.Size {
			t.Errorf("blob %s in %s: %d bytes, want %d", d.Digest, repo, len(body), d.Size)
		}
		if got := sha256Digest(body); got != d.Digest.String() {
			t.Errorf("blob %s in %s has digest %s", d.Digest, repo, got)
		}
	}
}

func getBlob(t *testing.T, addr, repo, digest string) []byte {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/v2/%s/blobs/%s", addr, repo, digest))
	if err != nil {
		t.Fatalf("getting blob %s: %v", digest, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading blob %s: %v", digest, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET blob %s in %s: %s %s", digest, repo, resp.Status, body)
	}
	return body
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func mustDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
