package dockerd_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// clientTimeout bounds one docker or ctr command. A pull that the mirror
// cannot answer makes dockerd fall back to registry-1.docker.io, which has
// no network here; the bound turns that into a failure rather than a hang.
const clientTimeout = 3 * time.Minute

func TestDockerPullsAMultiLayerImageThroughTheAgentMirror(t *testing.T) {
	e := setup(t)
	repo := uniqueName("multi")
	sizes := []int{3 << 20, 1 << 20, 2 << 20, 512 << 10}
	pushed := buildAndPush(t, e, e.origin.Addr+"/library/"+repo+":v1", sizes)

	before := agentMetrics(t, e)
	docker(t, e.puller, "pull", repo+":v1")
	after := agentMetrics(t, e)

	got := inspect(t, e.puller, repo+":v1")
	if got.ID != pushed.imageID {
		t.Errorf("pulled image ID %s, pushed %s", got.ID, pushed.imageID)
	}
	if !slices.Contains(got.RepoDigests, repo+"@"+pushed.digest) {
		t.Errorf("pulled image's RepoDigests %v lack %s@%s (the pushed manifest)", got.RepoDigests, repo, pushed.digest)
	}
	if n := len(got.RootFS.Layers); n != len(sizes) {
		t.Errorf("pulled image has %d layers, want %d", n, len(sizes))
	}
	assertLayersWentThroughP2P(t, before, after, total(sizes))
}

func TestDockerPullsAMultiPlatformIndexThroughTheAgentMirror(t *testing.T) {
	e := setup(t)
	repo := uniqueName("index")
	ref, err := name.ParseReference(e.origin.Addr+"/library/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	// dockerd 20.10 cannot build an index; go-containerregistry writes one
	// of two single-platform images with random layers.
	platforms := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}}
	idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	images := map[string]v1.Image{}
	for _, p := range platforms {
		img, err := random.Image(1<<20, 2)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		images[p.Architecture] = img
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		t.Fatalf("pushing the index to the origin: %v", err)
	}
	idxDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	// The host's platform is what dockerd picks.
	want, err := images["amd64"].ConfigName()
	if err != nil {
		t.Fatal(err)
	}

	before := agentMetrics(t, e)
	docker(t, e.puller, "pull", repo+":v1")
	after := agentMetrics(t, e)

	got := inspect(t, e.puller, repo+":v1")
	if got.ID != want.String() {
		t.Errorf("pulled image ID %s, want the amd64 image's config %s", got.ID, want)
	}
	if !slices.Contains(got.RepoDigests, repo+"@"+idxDigest.String()) {
		t.Errorf("pulled image's RepoDigests %v lack %s@%s (the index)", got.RepoDigests, repo, idxDigest)
	}
	if got.Architecture != "amd64" {
		t.Errorf("pulled image's architecture %q, want amd64", got.Architecture)
	}
	// random.Image's layers are gzip of random bytes, so the compressed
	// sizes are about the 2 x 1 MiB of content.
	assertLayersWentThroughP2P(t, before, after, 2<<20)
}

func TestDockerPullsByTheAgentsOwnAddress(t *testing.T) {
	e := setup(t)
	repo := "team/" + uniqueName("app")
	sizes := []int{2 << 20, 1 << 20}
	pushed := buildAndPush(t, e, e.origin.Addr+"/"+repo+":1.0", sizes)

	pullByAgentAddress(t, e, e.agent, e.agent.Addr+"/"+repo+":1.0", pushed, sizes)
}

// pullByAgentAddress pulls ref (agent.Addr/repo:tag) on the puller and
// checks that it is the pushed image and that its layers came through the
// agent's P2P engine.
func pullByAgentAddress(t *testing.T, e *env, agent *testenv.AgentServer, ref string, pushed pushedImage, sizes []int) {
	t.Helper()
	before := metricsOf(t, agent)
	docker(t, e.puller, "pull", ref)
	after := metricsOf(t, agent)

	got := inspect(t, e.puller, ref)
	if got.ID != pushed.imageID {
		t.Errorf("pulled image ID %s, pushed %s", got.ID, pushed.imageID)
	}
	repo := ref[:strings.LastIndex(ref, ":")]
	if !slices.Contains(got.RepoDigests, repo+"@"+pushed.digest) {
		t.Errorf("pulled image's RepoDigests %v lack the pushed manifest %s", got.RepoDigests, pushed.digest)
	}
	assertLayersWentThroughP2P(t, before, after, total(sizes))
}

func TestDockerPushToTheAgentIsRefusedNamingTheOrigin(t *testing.T) {
	e := setup(t)
	repo := "team/" + uniqueName("push")
	ref := e.agent.Addr + "/" + repo + ":1"
	buildImage(t, e.puller, ref, []int{64 << 10})
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	out, err := e.puller.Docker(ctx, "push", ref)
	if err == nil {
		t.Fatalf("docker push to the agent succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), e.origin.URL()) {
		t.Errorf("docker push to the agent was refused without naming the origin %s:\n%s", e.origin.URL(), out)
	}
}

// pushedImage is what the pusher knows of an image it pushed.
type pushedImage struct {
	imageID string // config digest
	digest  string // manifest digest
}

var pushDigest = regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`)

// buildAndPush builds an image of random layers of the given sizes on the
// pusher and pushes it as ref (host:port/repo:tag).
func buildAndPush(t *testing.T, e *env, ref string, sizes []int) pushedImage {
	t.Helper()
	id := buildImage(t, e.pusher, ref, sizes)
	out := docker(t, e.pusher, "push", ref)
	m := pushDigest.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("docker push printed no manifest digest:\n%s", out)
	}
	return pushedImage{imageID: id, digest: m[1]}
}

// buildImage builds FROM scratch one COPY layer per size, each a file of
// random bytes (so no layer exists anywhere else), and returns the image
// ID.
func buildImage(t *testing.T, d *testenv.DockerDaemon, ref string, sizes []int) string {
	t.Helper()
	dir := t.TempDir()
	dockerfile := "FROM scratch\n"
	for i, n := range sizes {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		f := fmt.Sprintf("layer%d.bin", i)
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
		dockerfile += fmt.Sprintf("COPY %s /%s\n", f, f)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	out := docker(t, d, "build", "-q", "-t", ref, dir)
	return strings.TrimSpace(string(out))
}

// imageInspect is the part of `docker image inspect` the tests read.
type imageInspect struct {
	ID           string `json:"Id"`
	RepoDigests  []string
	Architecture string
	RootFS       struct{ Layers []string }
}

func inspect(t *testing.T, d *testenv.DockerDaemon, ref string) imageInspect {
	t.Helper()
	out := docker(t, d, "image", "inspect", ref)
	var got []imageInspect
	if err := json.Unmarshal(out, &got); err != nil || len(got) != 1 {
		t.Fatalf("docker image inspect %s: %v\n%s", ref, err, out)
	}
	return got[0]
}

func docker(t *testing.T, d *testenv.DockerDaemon, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	out, err := d.Docker(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func agentMetrics(t *testing.T, e *env) testenv.Metrics {
	t.Helper()
	return metricsOf(t, e.agent)
}

// assertLayersWentThroughP2P checks that between two scrapes the agent's
// P2P engine received at least min verified piece bytes and that no blob
// was proxied from the origin's registry API.
func assertLayersWentThroughP2P(t *testing.T, before, after testenv.Metrics, min int) {
	t.Helper()
	const downloaded = "shoal_agent_downloaded_bytes_total"
	got := after.Sum(downloaded) - before.Sum(downloaded)
	if got < float64(min) {
		t.Errorf("%s grew by %.0f bytes during the pull, want at least the %d bytes of layers: the layers did not come through P2P", downloaded, got, min)
	}
	const proxied = "shoal_agent_origin_proxy_bytes_total"
	if p := after.Sum(proxied) - before.Sum(proxied); p != 0 {
		t.Errorf("%s grew by %.0f bytes: blobs were proxied from the origin instead of fetched through P2P", proxied, p)
	}
	const byOrigin = "shoal_agent_blob_cache_requests_total"
	if p := after.Sum(byOrigin, "result", "origin") - before.Sum(byOrigin, "result", "origin"); p != 0 {
		t.Errorf("%s{result=\"origin\"} grew by %.0f", byOrigin, p)
	}
	t.Logf("agent received %.0f piece bytes from peers and %.0f from origin seeders",
		after.Sum(downloaded, "source", "peer")-before.Sum(downloaded, "source", "peer"),
		after.Sum(downloaded, "source", "origin")-before.Sum(downloaded, "source", "origin"))
}

func total(sizes []int) int {
	n := 0
	for _, s := range sizes {
		n += s
	}
	return n
}

// uniqueName is a repository name no other test or run uses.
func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

func TestASecondHostsDockerPullsTheLayersFromTheFirstHostsAgent(t *testing.T) {
	e := setup(t)
	repo := uniqueName("second")
	sizes := []int{4 << 20, 4 << 20}
	pushed := buildAndPush(t, e, e.origin.Addr+"/library/"+repo+":v1", sizes)
	// The first host pulls, so its agent holds and seeds every layer.
	docker(t, e.puller, "pull", repo+":v1")

	agent2 := testenv.Agent(t, testenv.AgentOptions{
		Origin:   e.origin.URL(),
		Seeders:  []string{e.origin.SeederAddr},
		Trackers: []string{e.tracker.GRPCAddr},
	})
	host2 := testenv.Dockerd(t, testenv.DockerdOptions{Mirrors: []string{agent2.URL()}})
	docker(t, host2, "pull", repo+":v1")

	if got := inspect(t, host2, repo+":v1"); got.ID != pushed.imageID {
		t.Errorf("second host pulled image ID %s, pushed %s", got.ID, pushed.imageID)
	}
	m, err := testenv.ScrapeMetrics(t.Context(), agent2.URL()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	peer := m.Sum("shoal_agent_downloaded_bytes_total", "source", "peer")
	origin := m.Sum("shoal_agent_downloaded_bytes_total", "source", "origin")
	t.Logf("second agent received %.0f bytes from peers, %.0f from origin seeders", peer, origin)
	if peer == 0 {
		t.Errorf("the second agent received nothing from the first, which held every layer: no P2P")
	}
	if peer+origin < float64(total(sizes)) {
		t.Errorf("the second agent received %.0f bytes, want at least the %d bytes of layers", peer+origin, total(sizes))
	}
}

// TestDockerPullsCachedImagesWhileTheOriginIsDown: a host pulls an image
// through its agent, removes it, and pulls it again by tag after the origin
// was stopped. dockerd pings /v2/ first (answered by the agent while the
// origin is unreachable), resolves the tag (the agent's last answer for
// it), then the manifest and blobs by digest (from the agent's caches).
func TestDockerPullsCachedImagesWhileTheOriginIsDown(t *testing.T) {
	e := setup(t)
	origin := testenv.SeedingOrigin(t, testenv.SeedingOriginOptions{
		Storage: "file://" + t.TempDir(),
		Name:    "origin-down",
	})
	repo := uniqueName("offline")
	pushed := buildAndPush(t, e, origin.Addr+"/library/"+repo+":v1", []int{2 << 20, 3 << 20})
	agent := testenv.Agent(t, testenv.AgentOptions{
		Origin:  origin.URL(),
		Seeders: []string{origin.SeederAddr},
	})
	host := testenv.Dockerd(t, testenv.DockerdOptions{Mirrors: []string{agent.URL()}})
	docker(t, host, "pull", repo+":v1")
	docker(t, host, "rmi", repo+":v1")

	if err := origin.Stop(testenv.DefaultStopTimeout); err != nil {
		t.Fatalf("stopping the origin: %v", err)
	}
	docker(t, host, "pull", repo+":v1")
	if got := inspect(t, host, repo+":v1"); got.ID != pushed.imageID {
		t.Errorf("pulled image ID %s with the origin down, pushed %s", got.ID, pushed.imageID)
	}
}
