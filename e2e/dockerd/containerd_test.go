package dockerd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// mirrorHostsTOML makes the agent docker.io's mirror, the way
// deploy/ snippets tell a containerd host to.
const mirrorHostsTOML = `server = "https://registry-1.docker.io"

[host."%s"]
  capabilities = ["pull", "resolve"]
`

// agentHostsTOML is for pulls that name the agent itself.
const agentHostsTOML = `server = "%s"

[host."%s"]
  capabilities = ["pull", "resolve"]
`

func TestCtrPullsThroughTheAgentAsDockerHubMirror(t *testing.T) {
	e := setup(t)
	ctd := testenv.Containerd(t)
	repo := uniqueName("ctr")
	sizes := []int{2 << 20, 1 << 20}
	pushed := buildAndPush(t, e, e.origin.Addr+"/library/"+repo+":v1", sizes)

	hosts := t.TempDir()
	writeHostsTOML(t, hosts, "docker.io", fmt.Sprintf(mirrorHostsTOML, e.agent.URL()))
	ref := "docker.io/library/" + repo + ":v1"
	before := agentMetrics(t, e)
	ctr(t, ctd, "image", "pull", "--hosts-dir", hosts, "--snapshotter", "native", ref)
	after := agentMetrics(t, e)

	assertImageDigest(t, ctd, ref, pushed.digest)
	assertLayersWentThroughP2P(t, before, after, total(sizes))
}

func TestCtrPullsByTheAgentsOwnAddress(t *testing.T) {
	e := setup(t)
	ctd := testenv.Containerd(t)
	repo := "team/" + uniqueName("ctr")
	sizes := []int{1 << 20, 1 << 20, 512 << 10}
	pushed := buildAndPush(t, e, e.origin.Addr+"/"+repo+":1.0", sizes)

	hosts := t.TempDir()
	writeHostsTOML(t, hosts, e.agent.Addr, fmt.Sprintf(agentHostsTOML, e.agent.URL(), e.agent.URL()))
	ref := e.agent.Addr + "/" + repo + ":1.0"
	before := agentMetrics(t, e)
	ctr(t, ctd, "image", "pull", "--hosts-dir", hosts, "--snapshotter", "native", ref)
	after := agentMetrics(t, e)

	assertImageDigest(t, ctd, ref, pushed.digest)
	assertLayersWentThroughP2P(t, before, after, total(sizes))
}

func writeHostsTOML(t *testing.T, dir, host, body string) {
	t.Helper()
	d := filepath.Join(dir, host)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// assertImageDigest checks `ctr image ls` lists ref with the pushed
// manifest digest, and that containerd holds that manifest's content.
func assertImageDigest(t *testing.T, ctd *testenv.ContainerdDaemon, ref, want string) {
	t.Helper()
	out := ctr(t, ctd, "image", "ls")
	var got string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			got = f[2]
		}
	}
	if got != want {
		t.Fatalf("ctr image ls: %s has digest %q, want the pushed manifest %s\n%s", ref, got, want, out)
	}
	ctr(t, ctd, "content", "get", want)
}

func ctr(t *testing.T, c *testenv.ContainerdDaemon, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	out, err := c.Ctr(ctx, append([]string{"--namespace", "shoal-e2e"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
