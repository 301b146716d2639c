package k8s

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// dockerTimeout bounds one docker command. A pull of the rendered image
// that misses the local one would go to ghcr.io, which CI cannot reach:
// the bound turns that into a failure instead of a hang.
const dockerTimeout = 3 * time.Minute

// TestDaemonSetContainerRunsInDockerd runs the rendered agent DaemonSet's
// container for real: the peer-agent image is built by `make images`'
// code (hack/images: static binary, scratch, non-root) and pushed to a
// Shoal origin the test starts, a dockerd of the test's own pulls it from
// there and tags it as the image the chart renders, and `docker run` starts
// that image with the container's args, env (downward API fields filled),
// securityContext, resources and volumes (bind mounts of directories
// filled from the rendered ConfigMap) on the host network, as the kubelet
// would. Once its readiness probe answers, an image pushed to the origin
// is pulled through the agent's mirror port: digests must match, the
// bytes must have come over the P2P plane, the agent must log each layer's
// download, and it must exit 0 on SIGTERM within the pod's grace period.
func TestDaemonSetContainerRunsInDockerd(t *testing.T) {
	if err := testenv.DockerdAvailable(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	root := workspaceRoot(t)
	tracker := testenv.Tracker(t)
	origin := testenv.SeedingOrigin(t, testenv.SeedingOriginOptions{
		Name:     "origin-1",
		Storage:  "file://" + filepath.Join(t.TempDir(), "storage"),
		Trackers: []string{tracker.GRPCAddr},
	})
	ports := map[string]string{}
	for _, p := range []string{"mirror", "peer", "pieces"} {
		addr, err := testenv.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, ports[p], _ = net.SplitHostPort(addr)
	}
	// docs/kubernetes.md's "Agents only", pointed at the test's origin
	// and tracker, with the agent's ports off the defaults. The image
	// stays the chart's default: the test supplies it locally.
	h := helmRender{Name: "agents only, in dockerd", Release: "shoal", Namespace: "shoal", Values: valueOptions{Values: []string{
		"origin.enabled=false", "tracker.enabled=false",
		"agent.origin=" + origin.URL(),
		"agent.originSeeders={" + origin.SeederAddr + "}",
		"trackers={" + tracker.GRPCAddr + "}",
		"agent.mirror.port=" + ports["mirror"], "agent.peerPort=" + ports["peer"], "agent.piecePort=" + ports["pieces"],
	}}}
	objs, _, err := h.render(root)
	if err != nil {
		t.Fatal(err)
	}
	pod := newPodHost(t, find(t, objs, "DaemonSet", "-agent"), objs, fieldValues{
		"metadata.name": "shoal-agent-7kq2d", "spec.nodeName": "node-1", "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1",
	}, nil)
	agent := pod.container("agent")

	d := testenv.Dockerd(t, testenv.DockerdOptions{InsecureRegistries: []string{origin.Addr}})
	built := buildAgentImage(t, root, origin.Addr+"/shoal")
	docker(t, d, "pull", built)
	// The rendered name now stands for the local build, as if the node
	// had pulled the release from ghcr.io.
	docker(t, d, "tag", built, agent.Image)

	ctr := pod.dockerRun(d, "agent")
	if got, want := ctr.inspect(t).Image, imageID(t, d, built); got != want {
		t.Fatalf("the container runs image %s, want the local build %s (%s)", got, want, built)
	}
	ctr.checkSecurityContext(t, agent)
	// The liveness probe too: a failing one would have the kubelet
	// restart the pod over and over.
	live, _ := httpProbeURL(t, agent, "liveness", agent.LivenessProbe)
	if code := getStatus(t, live); code != http.StatusOK {
		t.Errorf("the liveness probe %s answers %d, want 200", live, code)
	}
	checkPortsListen(t, agent)

	// Push an image to the origin, pull it through the agent.
	img, err := random.Image(2<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(origin.Addr+"/k8s/docker:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("pushing to the origin: %v", err)
	}
	mirror := "http://127.0.0.1:" + ports["mirror"]
	pullThrough(t, mirror, "k8s/docker", "v1", img)

	layers := checkPulledOverP2P(t, mirror, img)
	for _, l := range layers {
		ld, _ := l.Digest()
		eventually.True(t, "the agent's log line for the download of "+ld.String(), func() bool {
			return ctr.logged(t, `"download complete"`, ld.String())
		})
	}

	if code := ctr.stop(t); code != 0 {
		t.Errorf("the agent exited with status %d on SIGTERM, want 0\n%s", code, ctr.logs(t))
	}
}

// buildAgentImage builds the peer-agent's image for this machine's
// architecture with hack/images, as `make images` does, pushes it to
// registry (host:port/prefix) and returns its reference.
func buildAgentImage(t *testing.T, root, registry string) string {
	t.Helper()
	const tag = "e2e"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	args := []string{"run", "./hack/images", "--registry", registry, "--tag", tag,
		"--platforms", "linux/" + runtime.GOARCH, "--commands", "peer-agent"}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	// A test binary that dies mid-build takes the build with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("go %s (%s):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Second), bytes.TrimSpace(out))
	return registry + "/peer-agent:" + tag
}

// docker runs the docker client against d; a failure fails the test.
func docker(t *testing.T, d *testenv.DockerDaemon, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), dockerTimeout)
	defer cancel()
	out, err := d.Docker(ctx, args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func imageID(t *testing.T, d *testenv.DockerDaemon, ref string) string {
	t.Helper()
	return docker(t, d, "image", "inspect", "--format", "{{.ID}}", ref)
}

// dockerContainer is a container started by dockerRun.
type dockerContainer struct {
	d     *testenv.DockerDaemon
	id    string
	grace time.Duration
}

// dockerRun runs container name of the pod in d as the kubelet would with
// dockershim: `docker run` of its image (pulled per imagePullPolicy), its
// command and args with $(VAR) expanded, its env, its volume mounts as
// bind mounts of the pod's directories, its securityContext and resource
// limits, on the host network. It is removed when the test ends.
func (h *podHost) dockerRun(d *testenv.DockerDaemon, name string) *dockerContainer {
	h.t.Helper()
	t := h.t
	c := h.container(name)
	if !h.pod.HostNetwork {
		t.Fatalf("container %s: only host-network pods are run in dockerd here (hostPort publishing is not mapped)", name)
	}
	grace := 30 * time.Second
	if s := h.pod.TerminationGracePeriodSeconds; s != nil {
		grace = time.Duration(*s) * time.Second
	}
	args := []string{"run", "--detach", "--name", name + "_" + h.fields["metadata.name"],
		"--network", "host", "--pull", pullPolicy(t, c),
		"--stop-timeout", strconv.Itoa(int(grace / time.Second))}

	env := h.env(c)
	for _, k := range slices.Sorted(maps.Keys(env)) {
		args = append(args, "--env", k+"="+env[k])
	}
	for _, m := range h.hostMounts(c) {
		if m.fill != nil {
			m.fill(func(s string) string { return s }) // the container sees the mount paths themselves
		}
		spec := "type=bind,source=" + m.host + ",target=" + m.MountPath
		if m.ReadOnly {
			spec += ",readonly"
		}
		args = append(args, "--mount", spec)
	}
	args = append(args, securityArgs(t, h.pod.SecurityContext, c)...)
	args = append(args, resourceArgs(c.Resources)...)

	argv := append(append([]string{}, c.Command...), c.Args...)
	for i := range argv {
		argv[i] = expand(argv[i], env)
	}
	if len(c.Command) > 0 {
		args = append(args, "--entrypoint", argv[0], c.Image)
		argv = argv[1:]
	} else {
		args = append(args, c.Image)
	}
	args = append(args, argv...)
	t.Logf("docker %s", strings.Join(args, " "))
	dc := &dockerContainer{d: d, id: docker(t, d, args...), grace: grace}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, dc.logs(t))
		}
		ctx, cancel := context.WithTimeout(context.Background(), grace+dockerTimeout)
		defer cancel()
		if out, err := d.Docker(ctx, "rm", "--force", dc.id); err != nil {
			t.Errorf("removing container %s: %v\n%s", dc.id, err, out)
		}
	})

	url, _ := probeURL(t, c)
	eventually.True(t, "container "+name+"'s readiness probe "+url, func() bool {
		if st := dc.inspect(t).State; !st.Running {
			t.Fatalf("container %s is not running (status %s, exit code %d, error %q); its log follows", name, st.Status, st.ExitCode, st.Error)
		}
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return dc
}

// getStatus is the status of GET url.
func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// pullPolicy is `docker run --pull` for the container's imagePullPolicy.
func pullPolicy(t *testing.T, c corev1.Container) string {
	t.Helper()
	switch c.ImagePullPolicy {
	case corev1.PullIfNotPresent:
		return "missing"
	case corev1.PullAlways:
		return "always"
	case corev1.PullNever:
		return "never"
	}
	t.Fatalf("container %s: imagePullPolicy %q", c.Name, c.ImagePullPolicy)
	return ""
}

// securityArgs are the docker flags of the container's securityContext
// (over the pod's). Docker's default seccomp profile is the
// RuntimeDefault the chart asks for; fields not mapped here fail the
// test, so a chart change that needs one cannot pass unnoticed.
func securityArgs(t *testing.T, pod *corev1.PodSecurityContext, c corev1.Container) []string {
	t.Helper()
	var user, group *int64
	var nonRoot *bool
	if pod != nil {
		if pod.SELinuxOptions != nil || pod.WindowsOptions != nil || pod.AppArmorProfile != nil || len(pod.SupplementalGroups) > 0 || pod.FSGroup != nil || len(pod.Sysctls) > 0 {
			t.Fatalf("the pod's securityContext has fields this test does not map to docker: %+v", *pod)
		}
		if p := pod.SeccompProfile; p != nil && p.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Fatalf("the pod's seccomp profile %s: only RuntimeDefault (docker's default profile) is mapped", p.Type)
		}
		user, group, nonRoot = pod.RunAsUser, pod.RunAsGroup, pod.RunAsNonRoot
	}
	var args []string
	if s := c.SecurityContext; s != nil {
		if s.SELinuxOptions != nil || s.WindowsOptions != nil || s.AppArmorProfile != nil || s.ProcMount != nil {
			t.Fatalf("container %s's securityContext has fields this test does not map to docker: %+v", c.Name, *s)
		}
		if p := s.SeccompProfile; p != nil && p.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Fatalf("container %s's seccomp profile %s: only RuntimeDefault (docker's default profile) is mapped", c.Name, p.Type)
		}
		if s.RunAsUser != nil {
			user = s.RunAsUser
		}
		if s.RunAsGroup != nil {
			group = s.RunAsGroup
		}
		if s.RunAsNonRoot != nil {
			nonRoot = s.RunAsNonRoot
		}
		if s.Privileged != nil && *s.Privileged {
			args = append(args, "--privileged")
		}
		if s.ReadOnlyRootFilesystem != nil && *s.ReadOnlyRootFilesystem {
			args = append(args, "--read-only")
		}
		if s.AllowPrivilegeEscalation != nil && !*s.AllowPrivilegeEscalation {
			args = append(args, "--security-opt", "no-new-privileges")
		}
		if caps := s.Capabilities; caps != nil {
			for _, capability := range caps.Drop {
				args = append(args, "--cap-drop", string(capability))
			}
			for _, capability := range caps.Add {
				args = append(args, "--cap-add", string(capability))
			}
		}
	}
	if nonRoot != nil && *nonRoot && (user == nil || *user == 0) {
		// The kubelet refuses such a pod (with no user it checks the
		// image's, which for Shoal's images is 65532; the chart sets one).
		t.Fatalf("container %s: runAsNonRoot with user %v would not start", c.Name, user)
	}
	if user != nil {
		u := strconv.FormatInt(*user, 10)
		if group != nil {
			u += ":" + strconv.FormatInt(*group, 10)
		}
		args = append(args, "--user", u)
	}
	return args
}

// resourceArgs are the docker flags of the container's resources, as the
// kubelet sets the cgroup: the limits, and the CPU request as shares.
func resourceArgs(r corev1.ResourceRequirements) []string {
	var args []string
	if q, ok := r.Limits[corev1.ResourceMemory]; ok {
		args = append(args, "--memory", strconv.FormatInt(q.Value(), 10))
	}
	if q, ok := r.Limits[corev1.ResourceCPU]; ok {
		args = append(args, "--cpus", strconv.FormatFloat(float64(q.MilliValue())/1000, 'f', 3, 64))
	}
	if q, ok := r.Requests[corev1.ResourceCPU]; ok {
		args = append(args, "--cpu-shares", strconv.FormatInt(max(2, q.MilliValue()*1024/1000), 10))
	}
	return args
}

// containerState is what the test reads of `docker inspect`.
type containerState struct {
	Image string
	State struct {
		Status   string
		Running  bool
		Pid      int
		ExitCode int
		Error    string
	}
}

func (c *dockerContainer) inspect(t *testing.T) containerState {
	t.Helper()
	var s []containerState
	if err := json.Unmarshal([]byte(docker(t, c.d, "container", "inspect", c.id)), &s); err != nil || len(s) != 1 {
		t.Fatalf("docker inspect %s: %d results, %v", c.id, len(s), err)
	}
	return s[0]
}

// logs is the container's output (the agent logs to stderr).
func (c *dockerContainer) logs(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	out, err := c.d.Docker(ctx, "logs", c.id)
	if err != nil {
		return fmt.Sprintf("docker logs %s: %v\n%s", c.id, err, out)
	}
	return string(out)
}

// logged reports whether one line of the container's log holds every
// part.
func (c *dockerContainer) logged(t *testing.T, parts ...string) bool {
	t.Helper()
lines:
	for _, line := range strings.Split(c.logs(t), "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		return true
	}
	return false
}

// checkSecurityContext reads the container's process on the host: the
// user the rendered securityContext names (the cache hostPath is root's,
// which is why the chart runs the agent as root), no capabilities at all
// (capabilities: drop: [ALL]), no privilege escalation.
func (c *dockerContainer) checkSecurityContext(t *testing.T, spec corev1.Container) {
	t.Helper()
	pid := c.inspect(t).State.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading the container process's status: %v", err)
	}
	status := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			status[k] = strings.TrimSpace(v)
		}
	}
	sc := spec.SecurityContext
	if sc == nil || sc.RunAsUser == nil {
		t.Fatalf("container %s's securityContext names no user; the test checks the one it names", spec.Name)
	}
	if uid := strings.Fields(status["Uid"]); len(uid) == 0 || uid[0] != strconv.FormatInt(*sc.RunAsUser, 10) {
		t.Errorf("the container's process runs as uid %q, want %d (runAsUser)", status["Uid"], *sc.RunAsUser)
	}
	if got := status["CapEff"]; got != "0000000000000000" {
		t.Errorf("the container's process has capabilities %s, want none (drop: [ALL])", got)
	}
	if got := status["NoNewPrivs"]; got != "1" {
		t.Errorf("the container's process has NoNewPrivs %q, want 1 (allowPrivilegeEscalation: false)", got)
	}
}

// stop stops the container as the kubelet does (SIGTERM, SIGKILL after
// the pod's grace period) and returns its exit status.
func (c *dockerContainer) stop(t *testing.T) int {
	t.Helper()
	docker(t, c.d, "stop", "--time", strconv.Itoa(int(c.grace/time.Second)), c.id)
	return c.inspect(t).State.ExitCode
}

// checkPulledOverP2P checks, after img was pulled through the agent at
// mirror, that the agent received its layers as verified pieces (from the
// origin's seeder) and proxied nothing from the origin's registry API, and
// returns the layers.
func checkPulledOverP2P(t *testing.T, mirror string, img v1.Image) []v1.Layer {
	t.Helper()
	m, err := testenv.ScrapeMetrics(t.Context(), mirror+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var layerBytes int64
	for _, l := range layers {
		n, _ := l.Size()
		layerBytes += n
	}
	if got := m.Sum("shoal_agent_downloaded_bytes_total"); got < float64(layerBytes) {
		t.Errorf("the agent received %v verified piece bytes, want at least the layers' %d: the blobs did not come over the P2P plane (origin seeder)", got, layerBytes)
	}
	if got := m.Sum("shoal_agent_origin_proxy_bytes_total"); got != 0 {
		t.Errorf("the agent proxied %v bytes straight from the origin's registry API, want 0: P2P is off in the rendered config", got)
	}
	return layers
}
