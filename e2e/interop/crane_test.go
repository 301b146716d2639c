package interop

import (
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// TestCranePushCopyPull pushes a random multi-layer image with crane's
// library, copies it to another repository with the crane binary (which
// mounts the layers instead of uploading them again), and pulls it back.
func TestCranePushCopyPull(t *testing.T) {
	craneBin := testenv.Tool(t, testenv.Crane)
	origin := testenv.Origin(t, "file://"+t.TempDir())

	img, err := random.Image(512<<10, 4)
	if err != nil {
		t.Fatal(err)
	}
	src := origin.Addr + "/interop/crane-src:v1"
	dst := origin.Addr + "/interop/crane-dst:v1"
	if err := crane.Push(img, src, craneOpts(t)...); err != nil {
		t.Fatalf("crane push %s: %v", src, err)
	}
	want := mustDigest(t, img)

	out, err := exec.CommandContext(t.Context(), craneBin, "copy", "--insecure", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("crane copy %s %s: %v\n%s", src, dst, err, out)
	}
	out, err = exec.CommandContext(t.Context(), craneBin, "digest", "--insecure", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("crane digest %s: %v\n%s", dst, err, out)
	}
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("crane digest %s = %s, want the pushed image's %s", dst, got, want)
	}

	for _, ref := range []string{dst, origin.Addr + "/interop/crane-dst@" + want} {
		pulled, err := crane.Pull(ref, craneOpts(t)...)
		if err != nil {
			t.Fatalf("crane pull %s: %v", ref, err)
		}
		if got := mustDigest(t, pulled); got != want {
			t.Errorf("pulled %s has digest %s, want %s", ref, got, want)
		}
		if err := validate.Image(pulled); err != nil {
			t.Errorf("image pulled from %s is not intact: %v", ref, err)
		}
		wantLayers, _ := img.Layers()
		gotLayers, _ := pulled.Layers()
		if len(gotLayers) != len(wantLayers) {
			t.Fatalf("pulled %d layers, pushed %d", len(gotLayers), len(wantLayers))
		}
		for i := range wantLayers {
			w, _ := wantLayers[i].Digest()
			g, _ := gotLayers[i].Digest()
			if w != g {
				t.Errorf("layer %d of %s is %s, want %s", i, ref, g, w)
			}
		}
	}
	tags, err := crane.ListTags(origin.Addr+"/interop/crane-dst", craneOpts(t)...)
	if err != nil || !slices.Equal(tags, []string{"v1"}) {
		t.Errorf("tags of interop/crane-dst = %q (err %v), want [v1]", tags, err)
	}
}

// TestCrossRepositoryMountLinksAnExistingBlob checks the mount that crane
// copy relies on, explicitly: POST ?mount=&from= answers 201 with the
// blob's location, and the blob is then readable in the new repository
// without having been uploaded there.
func TestCrossRepositoryMountLinksAnExistingBlob(t *testing.T) {
	origin := testenv.Origin(t, "file://"+t.TempDir())
	img, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := crane.Push(img, origin.Addr+"/interop/mount-src:v1", craneOpts(t)...); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	dig, _ := layers[0].Digest()

	url := fmt.Sprintf("%s/v2/interop/mount-dst/blobs/uploads/?mount=%s&from=interop/mount-src", origin.URL(), dig)
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST mount of %s: %s, want 201 Created", dig, resp.Status)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != dig.String() {
		t.Errorf("mount answered Docker-Content-Digest %q, want %s", got, dig)
	}
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "/v2/interop/mount-dst/blobs/"+dig.String()) {
		t.Errorf("mount answered Location %q, want the blob in interop/mount-dst", loc)
	}
	body := getBlob(t, origin.Addr, "interop/mount-dst", dig.String())
	if got := sha256Digest(body); got != dig.String() {
		t.Errorf("mounted blob reads back with digest %s, want %s", got, dig)
	}
}
