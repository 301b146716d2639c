package k8s

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// TestPodSpecsPullThroughTheAgent runs the rendered origin StatefulSet's,
// tracker Deployment's and agent DaemonSet's containers as processes (see
// podHost), the agent's init container with the host's /bin/sh against a
// containerd certs.d directory that already holds a hosts.toml, and pulls
// a pushed image's manifest and blobs through the agent over HTTP: the
// bytes must come over the P2P plane (from the origin's seeder), and the
// agent must announce the blobs to the tracker. With containerd at hand
// (root), `ctr image pull` with the written hosts.toml pulls through the
// agent too.
func TestPodSpecsPullThroughTheAgent(t *testing.T) {
	root := workspaceRoot(t)
	ports := map[string]string{}
	for _, p := range []string{"registry", "seeder", "seederPieces", "gossip", "tracker", "trackerMetrics", "mirror", "peer", "pieces"} {
		addr, err := testenv.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, ports[p], _ = net.SplitHostPort(addr)
	}
	origin := "127.0.0.1:" + ports["registry"]
	// What docs/kubernetes.md shows for an origin reached at its own
	// address ("Agents only"), with every port moved off the defaults so
	// that parallel tests do not clash, and one origin node and tracker.
	h := helmRender{Name: "pod specs", Release: "shoal", Namespace: "shoal", Values: valueOptions{Values: []string{
		"origin.replicas=1", "origin.storage.filesystem.accessModes={ReadWriteOnce}",
		"origin.port=" + ports["registry"], "origin.seeder.port=" + ports["seeder"], "origin.seeder.piecePort=" + ports["seederPieces"],
		"origin.cluster.port=" + ports["gossip"],
		"origin.externalURL=http://" + origin,
		"tracker.count=1", "tracker.port=" + ports["tracker"], "tracker.metricsPort=" + ports["trackerMetrics"],
		"agent.mirror.port=" + ports["mirror"], "agent.peerPort=" + ports["peer"], "agent.piecePort=" + ports["pieces"],
		"agent.origin=http://" + origin,
		"trackers={127.0.0.1:" + ports["tracker"] + "}",
		"agent.containerd.enabled=true",
	}}}
	objs, _, err := h.render(root)
	if err != nil {
		t.Fatal(err)
	}

	// The tracker and the origin, from their pod specs.
	trackerPod := newPodHost(t, find(t, objs, "Deployment", "-tracker-0"), objs, fieldValues{"metadata.name": "shoal-tracker-0-6d9f7-x2x7q"}, nil)
	trackerPod.start("tracker")
	originPod := newPodHost(t, find(t, objs, "StatefulSet", "-origin"), objs, fieldValues{
		"metadata.name": "shoal-origin-0", "status.podIP": "127.0.0.1",
	}, nil)
	originPod.start("origin")
	// The seeder's piece port included: the chart pins it for firewalls.
	checkPortsListen(t, originPod.container("origin"))

	// The agent's node: containerd's certs.d already holds a hosts.toml
	// for the origin's host, which the init container must keep.
	agentPod := newPodHost(t, find(t, objs, "DaemonSet", "-agent"), objs, fieldValues{
		"metadata.name": "shoal-agent-7kq2d", "spec.nodeName": "node-1", "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1",
	}, nil)
	certsDir := agentPod.volumeDir("containerd-certs")
	before := "server = \"http://" + origin + "\"\n# the node's own settings\n"
	writeFile(t, filepath.Join(certsDir, origin, "hosts.toml"), before)
	t.Log(agentPod.run("containerd-hosts"))
	checkHostsTOML(t, certsDir, origin, "http://127.0.0.1:"+ports["mirror"], before)
	// A restarted pod runs it again: the backup stays the node's file.
	agentPod.run("containerd-hosts")
	checkHostsTOML(t, certsDir, origin, "http://127.0.0.1:"+ports["mirror"], before)

	agentPod.start("agent")
	checkPortsListen(t, agentPod.container("agent"))
	mirror := "http://127.0.0.1:" + ports["mirror"]

	// Push an image to the origin, pull it through the agent.
	img, err := random.Image(3<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(origin+"/k8s/demo:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("pushing to the origin: %v", err)
	}
	pullThrough(t, mirror, "k8s/demo", "v1", img)

	layers := checkPulledOverP2P(t, mirror, img)
	ld, _ := layers[0].Digest()
	waitForPeer(t, "http://127.0.0.1:"+ports["trackerMetrics"], ld.String(), "node-1")

	t.Run("ctr pull with the written hosts.toml", func(t *testing.T) {
		ctd := testenv.Containerd(t)
		before, err := testenv.ScrapeMetrics(t.Context(), mirror+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		out, err := ctd.Ctr(t.Context(), "--namespace", "shoal-e2e", "image", "pull", "--hosts-dir", certsDir, "--snapshotter", "native", ref.String())
		if err != nil {
			t.Fatalf("ctr image pull through the init container's hosts.toml: %v\n%s", err, out)
		}
		after, err := testenv.ScrapeMetrics(t.Context(), mirror+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if d := after.Sum("shoal_agent_http_requests_total") - before.Sum("shoal_agent_http_requests_total"); d < 3 {
			t.Errorf("containerd sent the agent %v requests, want the manifest and the blobs (at least 3): hosts.toml did not send it to the mirror", d)
		}
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkHostsTOML checks the init container's hosts.toml for host and that
// the node's earlier file is kept unchanged under _backup.
func checkHostsTOML(t *testing.T, certsDir, host, mirror, before string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(certsDir, host, "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{`server = "http://` + host + `"`, `[host."` + mirror + `"]`, `capabilities = ["pull", "resolve"]`} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts.toml for %s lacks %s:\n%s", host, want, got)
		}
	}
	kept, err := os.ReadFile(filepath.Join(certsDir, "_backup", host, "hosts.toml"))
	if err != nil {
		t.Fatalf("the node's hosts.toml was not kept: %v", err)
	}
	if string(kept) != before {
		t.Errorf("_backup/%s/hosts.toml = %q, want the node's file %q", host, kept, before)
	}
}

// pullThrough GETs the manifest and every blob of img through the mirror,
// as dockerd does, and checks each digest.
func pullThrough(t *testing.T, mirror, repo, tag string, img v1.Image) {
	t.Helper()
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	mt, _ := img.MediaType()
	manifest := get(t, mirror+"/v2/"+repo+"/manifests/"+tag, string(mt))
	if got := sha256Digest(manifest); got != want.String() {
		t.Fatalf("manifest through the agent has digest %s, want %s", got, want)
	}
	var m struct {
		Config v1.Descriptor   `json:"config"`
		Layers []v1.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		b := get(t, mirror+"/v2/"+repo+"/blobs/"+d.Digest.String(), "")
		if got := sha256Digest(b); got != d.Digest.String() || int64(len(b)) != d.Size {
			t.Errorf("blob %s through the agent: %d bytes with digest %s, want %d bytes", d.Digest, len(b), got, d.Size)
		}
	}
}

func get(t *testing.T, url, accept string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return b
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// waitForPeer waits until the tracker lists peer id as complete for
// digest (agents announce a finished blob at once).
func waitForPeer(t *testing.T, tracker, digest, id string) {
	t.Helper()
	var last string
	if err := eventually.Wait(eventually.Timeout, func() bool {
		b := get(t, tracker+"/debug/peers?digest="+digest, "")
		var peers []struct {
			ID       string `json:"id"`
			Complete bool   `json:"complete"`
		}
		if err := json.Unmarshal(b, &peers); err != nil {
			t.Fatalf("tracker /debug/peers: %v\n%s", err, b)
		}
		last = string(b)
		for _, p := range peers {
			if p.ID == id && p.Complete {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("the tracker does not list the agent %q as complete for %s (%v): %s", id, digest, err, last)
	}
}
