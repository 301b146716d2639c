package hostile_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/eventually"
)

// TestStorageGoneFailsFastAndComesBack: the origin's storage directory
// disappears under it (replaced by a file, as a failed mount leaves it).
// Pushes get 503 naming storage, readiness turns red, nothing half-written
// becomes visible; once the directory is back, readiness and pushes
// recover without a restart.
func TestStorageGoneFailsFastAndComesBack(t *testing.T) {
	root := filepath.Join(t.TempDir(), "storage")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	o := startOrigin(t, "file://"+root, "")
	c := newClient(t, o)
	c.pushImage("team/app", "v1", randomBytes(t, 256<<10))

	if err := os.Rename(root, root+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	blob := randomBytes(t, 64<<10)
	a := c.do("POST", "/v2/team/app/blobs/uploads/?digest="+sha256Digest(blob), blob)
	if a.status != http.StatusServiceUnavailable || a.ociCode() != "UNAVAILABLE" || !strings.Contains(string(a.body), "filesystem") ||
		a.header.Get("Retry-After") == "" {
		t.Fatalf("push with the storage directory gone: %v (Retry-After %q), want 503 UNAVAILABLE naming the filesystem storage, with Retry-After",
			a, a.header.Get("Retry-After"))
	}
	eventually.True(t, "readyz to turn red with the storage directory gone", func() bool {
		return c.do("GET", "/readyz", nil).status == http.StatusServiceUnavailable
	})
	if n := metrics(t, o).Sum("shoal_origin_storage_up"); n != 0 {
		t.Errorf("shoal_origin_storage_up = %v with the storage directory gone, want 0", n)
	}

	if err := os.Remove(root); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(root+".away", root); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "readyz to turn green once the storage directory was back", func() bool {
		return c.do("GET", "/readyz", nil).status == http.StatusOK
	})
	c.expect(c.do("HEAD", "/v2/team/app/blobs/"+sha256Digest(blob), nil), http.StatusNotFound, "the blob refused during the outage")
	c.pushImage("team/app", "v2", randomBytes(t, 256<<10))
	c.expect(c.do("GET", "/v2/team/app/manifests/v1", nil, "Accept", "application/vnd.oci.image.manifest.v1+json"), http.StatusOK, "image pushed before the outage")
}
