package dockerd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// Users of the access-controlled origin.
var passwords = map[string]string{
	"alice": "alice-pw-3b9d", // pulls path2/**
	"ci":    "ci-pw-77e1",    // pushes, from this host only
}

// authConfig is the mission's shape: path1/** public, path2/** for alice,
// pushes for ci from the build machine, which here is this host: dockerd
// connects from 127.0.0.1. (%s: the htpasswd path.)
const authConfig = `htpasswd: %s
rules:
  - repositories: ["**"]
    subjects: [user:ci]
    machines: ["cidr:127.0.0.1/32"]
    actions: [pull, push]
  - repositories: ["path1/**"]
    subjects: [anonymous]
    actions: [pull]
  - repositories: ["path2/**"]
    subjects: [user:alice]
    actions: [pull]
`

// writeAuthConfig writes the htpasswd file and the auth config into dir
// and returns the config's path.
func writeAuthConfig(dir string) (string, error) {
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := testenv.WriteHtpasswd(htpasswd, passwords); err != nil {
		return "", err
	}
	config := filepath.Join(dir, "auth.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, authConfig, htpasswd), 0o644); err != nil {
		return "", fmt.Errorf("writing the auth config: %w", err)
	}
	return config, nil
}

// login runs `docker login host -u user --password-stdin` on d.
func login(t *testing.T, d *testenv.DockerDaemon, host, user string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	out, err := d.DockerInput(ctx, strings.NewReader(passwords[user]), "login", host, "-u", user, "--password-stdin")
	if err != nil {
		t.Fatalf("docker login %s as %s: %v", host, user, err)
	}
	if !strings.Contains(string(out), "Login Succeeded") {
		t.Fatalf("docker login %s as %s printed no success:\n%s", host, user, out)
	}
}

// logout forgets d's credentials for host, so that what follows is
// anonymous.
func logout(t *testing.T, d *testenv.DockerDaemon, host string) {
	t.Helper()
	docker(t, d, "logout", host)
}

// pushAuth builds an image of random layers on the pusher and pushes it
// as ci (logged in) to repo on the access-controlled origin.
func pushAuth(t *testing.T, e *env, repo string, sizes []int) pushedImage {
	t.Helper()
	login(t, e.pusher, e.authOrigin.Addr, "ci")
	return buildAndPush(t, e, e.authOrigin.Addr+"/"+repo+":v1", sizes)
}

func TestDockerLoginThenPushToTheAccessControlledOrigin(t *testing.T) {
	e := setup(t)
	repo := "path2/" + uniqueName("push")
	ref := e.authOrigin.Addr + "/" + repo + ":v1"
	buildImage(t, e.pusher, ref, []int{256 << 10})
	logout(t, e.pusher, e.authOrigin.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	out, err := e.pusher.Docker(ctx, "push", ref)
	assertRefusedForAuth(t, "docker push without logging in", out, err)

	pushed := pushAuth(t, e, repo, []int{1 << 20, 512 << 10})

	// What was pushed is there for alice to read.
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(r, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: "alice", Password: passwords["alice"]}))
	if err != nil {
		t.Fatalf("alice's HEAD of the pushed %s: %v", ref, err)
	}
	if desc.Digest.String() != pushed.digest {
		t.Errorf("the origin has %s at %s, docker pushed %s", desc.Digest, ref, pushed.digest)
	}
}

func TestDockerPullsAPrivateImageThroughTheAgentWithCredentials(t *testing.T) {
	e := setup(t)
	repo := "path2/" + uniqueName("private")
	sizes := []int{2 << 20, 1 << 20}
	pushed := pushAuth(t, e, repo, sizes)
	ref := e.authAgent.Addr + "/" + repo + ":v1"

	logout(t, e.puller, e.authAgent.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	out, err := e.puller.Docker(ctx, "pull", ref)
	assertRefusedForAuth(t, "an anonymous docker pull of a private image through the agent", out, err)

	// docker login pings the agent, which relays the origin's challenge
	// naming its own /auth/token as the realm; dockerd gets its token there
	// (the agent asks the origin's token endpoint) and sends it to the
	// agent, which passes it on.
	login(t, e.puller, e.authAgent.Addr, "alice")
	defer logout(t, e.puller, e.authAgent.Addr)
	pullByAgentAddress(t, e, e.authAgent, ref, pushed, sizes)
}

func TestDockerPullsAPublicImageAnonymouslyThroughTheAgent(t *testing.T) {
	e := setup(t)
	repo := "path1/" + uniqueName("public")
	sizes := []int{1 << 20, 1 << 20}
	pushed := pushAuth(t, e, repo, sizes)
	ref := e.authAgent.Addr + "/" + repo + ":v1"

	logout(t, e.puller, e.authAgent.Addr)
	pullByAgentAddress(t, e, e.authAgent, ref, pushed, sizes)
}

func TestCtrPullsAPrivateImageThroughTheAgentWithUser(t *testing.T) {
	e := setup(t)
	ctd := testenv.Containerd(t)
	repo := "path2/" + uniqueName("ctr")
	sizes := []int{1 << 20, 512 << 10}
	pushed := pushAuth(t, e, repo, sizes)

	hosts := t.TempDir()
	writeHostsTOML(t, hosts, e.authAgent.Addr, fmt.Sprintf(agentHostsTOML, e.authAgent.URL(), e.authAgent.URL()))
	ref := e.authAgent.Addr + "/" + repo + ":v1"
	pull := []string{"image", "pull", "--hosts-dir", hosts, "--snapshotter", "native"}
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	out, err := ctd.Ctr(ctx, append([]string{"--namespace", "shoal-e2e"}, append(pull, ref)...)...)
	assertRefusedForAuth(t, "ctr pull of a private image without --user", out, err)
	// containerd asks the realm (the agent's /auth/token, proxied to the
	// origin's) for a token with the OAuth2 POST form.
	before := metricsOf(t, e.authAgent)
	ctr(t, ctd, append(pull, "--user", "alice:"+passwords["alice"], ref)...)
	after := metricsOf(t, e.authAgent)

	assertImageDigest(t, ctd, ref, pushed.digest)
	assertLayersWentThroughP2P(t, before, after, total(sizes))
}

// TestCraneWithCredentials pushes to the origin and pulls through the
// agent with go-containerregistry, the library crane is, with Basic
// credentials it trades for tokens. Through the agent the challenge's realm
// is the agent's own token endpoint, which proxies to the origin's:
// go-containerregistry (since v0.22) refuses a realm on a private or
// loopback address other than the registry's own, so with the origin's
// realm relayed (127.0.0.1 on another port) this pull failed.
func TestCraneWithCredentials(t *testing.T) {
	e := setup(t)
	img, err := random.Image(512<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	as := func(user string) remote.Option {
		return remote.WithAuth(&authn.Basic{Username: user, Password: passwords[user]})
	}
	repo := "path2/" + uniqueName("crane")
	dst, err := name.ParseReference(e.authOrigin.Addr+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img, remote.WithContext(ctx), as("alice")); err == nil {
		t.Fatalf("alice, who may only pull, pushed %s", dst)
	} else if !isStatus(err, 401, 403) {
		t.Errorf("alice's push of %s failed other than by a 401 or 403: %v", dst, err)
	}
	if err := remote.Write(dst, img, remote.WithContext(ctx), as("ci")); err != nil {
		t.Fatalf("ci's push of %s: %v", dst, err)
	}

	src, err := name.ParseReference(e.authAgent.Addr+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(src, remote.WithContext(ctx)); err == nil {
		t.Errorf("an anonymous pull of %s through the agent succeeded", src)
	} else if !isStatus(err, 401, 403) {
		t.Errorf("an anonymous pull of %s through the agent failed other than by a 401 or 403: %v", src, err)
	}
	before := metricsOf(t, e.authAgent)
	got, err := remote.Image(src, remote.WithContext(ctx), as("alice"))
	if err != nil {
		t.Fatalf("alice's pull of %s through the agent: %v", src, err)
	}
	if d, err := got.Digest(); err != nil || d != want {
		t.Errorf("alice pulled %s as %v (%v), pushed %s", src, d, err, want)
	}
	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		// go-containerregistry checks the digest as the bytes come.
		rc, err := l.Compressed()
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
		}
		if err != nil {
			t.Fatalf("alice's pull of a layer of %s through the agent: %v", src, err)
		}
	}
	after := metricsOf(t, e.authAgent)
	const requests = "shoal_agent_http_requests_total"
	if n := after.Sum(requests, "handler", "token", "code", "200") - before.Sum(requests, "handler", "token", "code", "200"); n < 1 {
		t.Errorf("%s{handler=\"token\",code=\"200\"} grew by %.0f during alice's pull: her token did not come through the agent", requests, n)
	}
	assertLayersWentThroughP2P(t, before, after, 2*(512<<10))
}

// assertRefusedForAuth checks that a client command failed, and for want
// of credentials rather than for any other reason.
func assertRefusedForAuth(t *testing.T, what string, out []byte, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded:\n%s", what, out)
	}
	// What each client makes of the registry's 401 (dockerd: "denied:
	// requested access to the resource is denied" after an anonymous token
	// that lacks the scope; containerd: "insufficient_scope").
	lower := strings.ToLower(string(out))
	if !slices.ContainsFunc([]string{"unauthorized", "denied", "insufficient_scope", "401"}, func(s string) bool { return strings.Contains(lower, s) }) {
		t.Errorf("%s failed, but not for want of credentials:\n%s", what, out)
	}
	t.Logf("%s was refused: %s", what, lastLine(out))
}

// lastLine is the last non-empty line of a client's output.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// isStatus reports whether err is a registry transport error with one of
// the statuses.
func isStatus(err error, statuses ...int) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	return slices.Contains(statuses, te.StatusCode)
}

func metricsOf(t *testing.T, a *testenv.AgentServer) testenv.Metrics {
	t.Helper()
	m, err := testenv.ScrapeMetrics(t.Context(), a.URL()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m
}
