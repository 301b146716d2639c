package gccompat

import (
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	minihdfs "github.com/shoal-dev/shoal/e2e/hdfs"
	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/storage"
	shoalhdfs "github.com/shoal-dev/shoal/pkg/storage/hdfs"
)

// TestShoalGCOnHDFS runs the comparison with Shoal collecting a copy of the
// registry:2 store on a real HDFS (a MiniDFSCluster): the walks, deletes,
// lease and pending set go through the HDFS driver.
func TestShoalGCOnHDFS(t *testing.T) {
	cluster, err := minihdfs.Start(t.Context(), minihdfs.DefaultOptions())
	c := minihdfs.Require(t, cluster, err)
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Logf("stopping the test HDFS: %v", err)
		}
	})

	root := t.TempDir()
	srv := testenv.Registry(t, root)
	pushFixture(t, srv.Addr)
	if err := srv.Stop(testenv.DefaultStopTimeout); err != nil {
		t.Logf("stopping the reference registry: %v", err)
	}

	u, err := url.Parse(c.URL("/gccompat") + "?user=shoal")
	if err != nil {
		t.Fatal(err)
	}
	drv, err := shoalhdfs.Open(t.Context(), u)
	if err != nil {
		t.Fatalf("opening %s: %v", u, err)
	}
	t.Cleanup(func() { drv.(*shoalhdfs.Driver).Close() })
	copyToDriver(t, root, drv)
	compareCollectors(t, root, drv)
}

// copyToDriver writes every file of a registry root through drv.
func copyToDriver(t *testing.T, root string, drv storage.Driver) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return drv.PutContent(t.Context(), "/"+filepath.ToSlash(rel), b)
	})
	if err != nil {
		t.Fatalf("copying %s into storage: %v", root, err)
	}
}
