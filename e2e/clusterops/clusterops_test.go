// Package clusterops_test runs shoalctl's cluster commands against real
// processes: a tracker and two seeding origin nodes on one storage.
// `shoalctl preheat` must leave every blob of an image with its metainfo
// computed once and announced by both owners before any agent asks, and
// `shoalctl cluster status` must show the members, a blob's owners and
// the peers the tracker lists for it.
package clusterops_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// cluster is a tracker and two origin nodes, each with its admin API.
type cluster struct {
	tracker *testenv.TrackerServer
	origins []*testenv.SeedingOriginServer
	admins  []string
	ctl     string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{tracker: testenv.Tracker(t), ctl: testenv.Binary(t, "shoalctl")}
	storage := "file://" + filepath.Join(t.TempDir(), "storage")
	for i := range 2 {
		admin, err := testenv.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		var join []string
		if i > 0 {
			join = []string{c.origins[0].ClusterAddr}
		}
		o := testenv.SeedingOrigin(t, testenv.SeedingOriginOptions{
			Storage:  storage,
			Name:     fmt.Sprintf("origin-%d", i+1),
			Join:     join,
			Trackers: []string{c.tracker.GRPCAddr},
			Args:     []string{"--admin-listen", admin},
		})
		c.origins = append(c.origins, o)
		c.admins = append(c.admins, "http://"+admin)
	}
	eventually.True(t, "both origin nodes to see 2 cluster members", func() bool {
		return c.originSum(t, "shoal_origin_cluster_members") == 4
	})
	return c
}

// originSum adds a metric over the origin nodes.
func (c *cluster) originSum(t *testing.T, metric string) float64 {
	t.Helper()
	var sum float64
	for _, o := range c.origins {
		m, err := testenv.ScrapeMetrics(t.Context(), o.URL()+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sum += m.Sum(metric)
	}
	return sum
}

// shoalctl runs shoalctl against origin i's admin API.
func (c *cluster) shoalctl(t *testing.T, i int, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), c.ctl, append([]string{"--admin", c.admins[i]}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pushImage pushes an image of three layers to origin 0 as repo:tag.
func (c *cluster) pushImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	img, err := random.Image(1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(c.origins[0].Addr+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return img
}

// blobs are the digests a pull of img reads: its config and layers.
func blobs(t *testing.T, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{m.Config.Digest.String()}
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

func TestPreheatWarmsEveryBlobOnBothOwnersBeforeAnyPull(t *testing.T) {
	c := startCluster(t)
	img := c.pushImage(t, "pre/app:v1")
	want := blobs(t, img)
	if got := c.originSum(t, "shoal_origin_seeder_metainfo_computed_total"); got != 0 {
		t.Fatalf("metainfo computed %v times before the preheat; the test assumes none", got)
	}

	// Through the second node, with the registry host in the name as
	// people copy it from a pull command.
	out, err := c.shoalctl(t, 1, "preheat", c.origins[0].Addr+"/pre/app:v1")
	if err != nil {
		t.Fatalf("shoalctl preheat: %v\n%s", err, out)
	}
	t.Logf("shoalctl preheat printed:\n%s", out)
	if !strings.Contains(out, "preheated pre/app:v1 (sha256:") || !strings.Contains(out, fmt.Sprintf(": %d blobs,", len(want))) {
		t.Errorf("preheat's summary does not name the image and its %d blobs:\n%s", len(want), out)
	}
	for _, d := range want {
		line := lineWith(out, d[:len("sha256:")+12])
		if strings.Count(line, " ready") != 2 {
			t.Errorf("preheat's line for blob %s is %q, want both owners ready", d, line)
		}
	}
	// No owner computes a blob's metainfo: the push stored it, and both
	// owners load it.
	if got := c.originSum(t, "shoal_origin_seeder_metainfo_computed_total"); got != 0 {
		t.Errorf("the origins computed metainfo %v times for %d pushed blobs, want 0 (stored at the push)", got, len(want))
	}
	// Both owners (two nodes, two replicas) announce every blob to the
	// tracker, as they would after an agent's first request.
	for _, d := range want {
		eventually.True(t, "the tracker to list both origin nodes for "+d, func() bool {
			return len(originHolders(t, c.tracker.URL(), d)) == 2
		})
	}

	out, err = c.shoalctl(t, 0, "preheat", "pre/app:nope")
	if err == nil || !strings.Contains(out, "404") || !strings.Contains(out, "pre/app") {
		t.Errorf("preheat of a missing tag: %v, printed %q; want a failure naming the image", err, out)
	}
}

func TestClusterStatusShowsMembersOwnersAndTrackerPeers(t *testing.T) {
	c := startCluster(t)
	img := c.pushImage(t, "status/app:v1")
	layer := blobs(t, img)[1]
	if out, err := c.shoalctl(t, 0, "preheat", "status/app:v1"); err != nil {
		t.Fatalf("shoalctl preheat: %v\n%s", err, out)
	}
	eventually.True(t, "the tracker to list both origin nodes for the layer", func() bool {
		return len(originHolders(t, c.tracker.URL(), layer)) == 2
	})

	out, err := c.shoalctl(t, 0, "cluster", "status", "--digest", layer, "--tracker", c.tracker.URL())
	if err != nil {
		t.Fatalf("shoalctl cluster status: %v\n%s", err, out)
	}
	t.Logf("shoalctl cluster status printed:\n%s", out)
	for _, want := range []string{
		"origin cluster as origin-1 sees it",
		"2 members, 2 owners per blob",
		"  origin-1 ", "  origin-2 ",
		"owners of " + layer + ", best first: ",
		"trackers this origin announces to: " + c.tracker.GRPCAddr,
		c.tracker.URL() + ": ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster status printed no %q", want)
		}
	}
	if n := strings.Count(out, "    origin "); n != 2 {
		t.Errorf("cluster status lists %d origin peers holding the layer at the tracker, want 2", n)
	}

	// --json is one object with the admin API's answer and the trackers'.
	out, err = c.shoalctl(t, 1, "cluster", "status", "--digest", layer, "--tracker", c.tracker.URL(), "--json")
	if err != nil {
		t.Fatalf("shoalctl cluster status --json: %v\n%s", err, out)
	}
	var st struct {
		Origin struct {
			Node    string
			Members []struct{ Name, Seeder string }
			Owners  []struct{ Name string }
		}
		Trackers []struct {
			Holders []struct{ Origin bool }
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster status --json printed something else than one JSON object: %v\n%s", err, out)
	}
	if st.Origin.Node != "origin-2" || len(st.Origin.Members) != 2 || len(st.Origin.Owners) != 2 ||
		len(st.Trackers) != 1 || len(st.Trackers[0].Holders) != 2 {
		t.Errorf("cluster status --json through origin-2: %+v; want node origin-2, 2 members with seeders, 2 owners, one tracker listing 2 holders", st)
	}
	for _, m := range st.Origin.Members {
		if m.Seeder == "" {
			t.Errorf("member %s has no seeder address in cluster status", m.Name)
		}
	}
}

// originHolders are the origin peers a tracker lists for a digest.
func originHolders(t *testing.T, trackerURL, d string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, trackerURL+"/debug/peers?digest="+d, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("tracker /debug/peers: %s", resp.Status)
	}
	var peers []struct {
		ID     string `json:"id"`
		Origin bool   `json:"origin"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&peers); err != nil {
		t.Fatalf("tracker /debug/peers: %v", err)
	}
	var ids []string
	for _, p := range peers {
		if p.Origin {
			ids = append(ids, p.ID)
		}
	}
	return ids
}

func lineWith(text, substr string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}
