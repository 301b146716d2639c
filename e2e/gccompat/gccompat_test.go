// Package gccompat checks that Shoal's mark-and-sweep keeps exactly the
// blobs that the reference registry's own `registry garbage-collect` keeps,
// on a storage directory written by the reference registry and on one
// written by Shoal's origin.
package gccompat

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/filesystem"
)

func TestShoalKeepsTheBlobsRegistryGarbageCollectKeeps(t *testing.T) {
	root := t.TempDir()
	srv := testenv.Registry(t, root)
	pushFixture(t, srv.Addr)
	if err := srv.Stop(testenv.DefaultStopTimeout); err != nil {
		t.Logf("stopping the reference registry: %v", err)
	}
	_, shoal := copyToFilesystem(t, root)
	compareCollectors(t, root, shoal)
}

// TestShoalGCOnAnOriginStore runs the same comparison on a store written by
// Shoal's origin, then serves the collected store with the origin again:
// every image that must remain pulls and validates (every blob read back
// and checked against its digest).
func TestShoalGCOnAnOriginStore(t *testing.T) {
	root := t.TempDir()
	origin := testenv.Origin(t, "file://"+root)
	remain := pushFixture(t, origin.Addr)
	if err := origin.Stop(testenv.DefaultStopTimeout); err != nil {
		t.Fatalf("stopping the origin: %v", err)
	}
	shoalRoot, shoal := copyToFilesystem(t, root)
	compareCollectors(t, root, shoal)

	again := testenv.Origin(t, "file://"+shoalRoot)
	for _, r := range remain {
		ref, err := name.ParseReference(again.Addr+"/"+r, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Get(ref, remote.WithContext(t.Context()))
		if err != nil {
			t.Errorf("after gc, %s does not resolve: %v", r, err)
			continue
		}
		if desc.MediaType.IsIndex() {
			idx, err := desc.ImageIndex()
			if err == nil {
				err = validate.Index(idx)
			}
			if err != nil {
				t.Errorf("after gc, index %s is broken: %v", r, err)
			}
			continue
		}
		img, err := desc.Image()
		if err == nil {
			err = validate.Image(img)
		}
		if err != nil {
			t.Errorf("after gc, image %s is broken: %v", r, err)
		}
	}
}

// compareCollectors runs `registry garbage-collect --delete-untagged=false`
// on root and Shoal's mark-and-sweep on shoal, a driver over a copy of root,
// and checks that they keep the same blobs and layer links.
func compareCollectors(t *testing.T, root string, shoal storage.Driver) {
	t.Helper()
	ctx := t.Context()
	bin := testenv.Tool(t, testenv.ReferenceRegistry)
	before := storedBlobs(t, shoal)

	// The reference, offline: registry garbage-collect on one copy.
	config := filepath.Join(t.TempDir(), "config.yml")
	cfg := fmt.Sprintf("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %q\n  delete:\n    enabled: true\n", root)
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "garbage-collect", "--delete-untagged=false", config)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("registry garbage-collect: %v\n%s", err, out)
	}
	reference, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}

	// Shoal on the other copy. The run's clock is moved past the grace
	// period: the fixture was written seconds ago, and the grace period
	// is about pushes in flight, which this comparison is not.
	gcCfg := gc.DefaultConfig()
	runner, err := gc.NewRunner(shoal, gcCfg, gc.RunnerOptions{
		Holder: "gccompat", LeaseSettle: time.Millisecond,
		Now:    func() time.Time { return time.Now().Add(time.Duration(gcCfg.Grace) + time.Hour) },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := runner.Run(context.WithoutCancel(ctx), gc.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}

	want, got := storedBlobs(t, reference), storedBlobs(t, shoal)
	if !slices.Equal(got, want) {
		t.Errorf("blob stores differ after gc:\nonly registry kept: %v\nonly shoal kept:    %v", minus(want, got), minus(got, want))
	}
	if len(want) == len(before) {
		t.Fatalf("registry garbage-collect deleted nothing of %d blobs: the fixture exercises nothing", len(before))
	}
	if len(rep.Blobs) != len(before)-len(got) {
		t.Errorf("report lists %d deleted blobs, the store lost %d", len(rep.Blobs), len(before)-len(got))
	}
	// Layer links: the same, except that Shoal also removes the links
	// registry:2 leaves dangling (to blobs it deleted, in repositories
	// without manifests).
	refLinks := layerLinks(t, reference)
	var wantLinks []string
	for _, l := range refLinks {
		if _, blob, _ := strings.Cut(l, "@"); slices.Contains(want, blob) {
			wantLinks = append(wantLinks, l)
		}
	}
	gotLinks := layerLinks(t, shoal)
	if !slices.Equal(gotLinks, wantLinks) {
		t.Errorf("layer links differ after gc:\nonly registry kept: %v\nonly shoal kept:    %v", minus(wantLinks, gotLinks), minus(gotLinks, wantLinks))
	}
	if dangling := len(refLinks) - len(wantLinks); dangling != 1 {
		t.Errorf("registry garbage-collect left %d dangling links, the fixture expects 1 (compat/layers-only)", dangling)
	}
	t.Logf("%d blobs before, %d after both collectors; %d bytes freed; storage calls %+v", len(before), len(got), rep.BytesFreed, rep.StorageCalls)
}

// copyToFilesystem copies a registry root and returns a driver over the copy.
func copyToFilesystem(t *testing.T, root string) (string, storage.Driver) {
	t.Helper()
	dir := t.TempDir()
	copyTree(t, root, dir)
	drv, err := filesystem.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, drv
}

// pushFixture writes, through the reference registry's API, every case
// its garbage-collect treats differently.
func pushFixture(t *testing.T, addr string) []string {
	t.Helper()
	opts := []remote.Option{remote.WithContext(t.Context())}
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(addr+"/"+s, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	image := func(layers int) v1.Image {
		img, err := random.Image(4<<10, int64(layers))
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	put := func(r string, img v1.Image) {
		if err := remote.Write(ref(r), img, opts...); err != nil {
			t.Fatalf("pushing %s: %v", r, err)
		}
	}
	digestOf := func(img interface{ Digest() (v1.Hash, error) }) string {
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	del := func(repo, dgst string) {
		r, err := name.NewDigest(addr+"/"+repo+"@"+dgst, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Delete(r, opts...); err != nil {
			t.Fatalf("deleting %s@%s: %v", repo, dgst, err)
		}
	}

	// Tagged images, one re-tagged so its old manifest is untagged but kept.
	a, b, c := image(3), image(2), image(2)
	put("compat/app:v1", a)
	put("compat/app:v2", b)
	put("compat/app:v2", c)
	// The same image in a second repository, deleted there: its blobs stay
	// through the first repository, its link in the second goes.
	put("compat/other:x", a)
	del("compat/other", digestOf(a))
	// A deleted image whose blobs nothing else uses.
	gone := image(3)
	put("compat/gone:old", gone)
	del("compat/gone", digestOf(gone))
	// A second image in that repository, so the repository remains.
	put("compat/gone:new", image(1))
	// A multi-platform index; and an index deleted, whose children stay as
	// untagged revisions.
	idx, err := random.Index(4<<10, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref("compat/multi:1.0"), idx, opts...); err != nil {
		t.Fatal(err)
	}
	idx2, err := random.Index(4<<10, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref("compat/multi:2.0"), idx2, opts...); err != nil {
		t.Fatal(err)
	}
	del("compat/multi", digestOf(idx2))
	// A referrer (an artifact whose subject is image a).
	ad, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	am, err := a.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	asz, err := a.Size()
	if err != nil {
		t.Fatal(err)
	}
	sbom := mutate.Subject(image(1), v1.Descriptor{MediaType: am, Digest: ad, Size: asz}).(v1.Image)
	put("compat/app@"+digestOf(sbom), sbom)
	// A layer uploaded and never used by a manifest.
	l, err := random.Layer(4<<10, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(ref("compat/app").Context(), l, opts...); err != nil {
		t.Fatal(err)
	}
	// A repository that only ever received a layer: registry:2's collector
	// does not enumerate it (no _manifests), so it deletes the blob and
	// leaves the link dangling; Shoal removes the dangling link too.
	l2, err := random.Layer(4<<10, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(ref("compat/layers-only").Context(), l2, opts...); err != nil {
		t.Fatal(err)
	}
	return []string{"compat/app:v1", "compat/app:v2", "compat/gone:new", "compat/multi:1.0", "compat/app@" + digestOf(sbom), "compat/app@" + digestOf(b)}
}

// storedBlobs lists blobs/<alg>/<xx>/<hex>/data as "alg:hex".
func storedBlobs(t *testing.T, drv storage.Driver) []string {
	return filesUnder(t, drv, "/docker/registry/v2/blobs", func(rel string) (string, bool) {
		parts := strings.Split(rel, "/")
		if len(parts) == 4 && parts[3] == "data" {
			return parts[0] + ":" + parts[2], true
		}
		return "", false
	})
}

// layerLinks lists repositories/<name>/_layers/<alg>/<hex>/link as
// "name@alg:hex".
func layerLinks(t *testing.T, drv storage.Driver) []string {
	return filesUnder(t, drv, "/docker/registry/v2/repositories", func(rel string) (string, bool) {
		repo, rest, ok := strings.Cut(rel, "/_layers/")
		if !ok || !strings.HasSuffix(rest, "/link") {
			return "", false
		}
		return repo + "@" + strings.Replace(strings.TrimSuffix(rest, "/link"), "/", ":", 1), true
	})
}

func filesUnder(t *testing.T, drv storage.Driver, dir string, keep func(rel string) (string, bool)) []string {
	t.Helper()
	var out []string
	err := drv.Walk(t.Context(), dir, func(fi storage.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		if k, ok := keep(strings.TrimPrefix(fi.Path(), dir+"/")); ok {
			out = append(out, k)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	slices.Sort(out)
	return out
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying %s: %v", from, err)
	}
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
