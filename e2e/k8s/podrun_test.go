package k8s

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// A pod spec run as processes on this host: the rendered container's
// binary (image name -> cmd/<name>), args and env with the pod's downward
// API fields filled in, its volumes as temporary directories, its config
// files from the rendered ConfigMap, and its readiness probe as the
// readiness check. Paths the container sees (mount paths) are mapped to
// those directories in the args, env and config files, which is all a
// mount namespace would do for these programs; the network is the host's,
// as hostNetwork: true gives the agent.

// fieldValues are the downward API fields of the pods run here.
type fieldValues map[string]string

// podHost is one pod's filesystem: a directory per volume.
type podHost struct {
	t       *testing.T
	root    string
	pod     corev1.PodSpec
	fields  fieldValues
	configs map[string]map[string]string // ConfigMap name -> data
	secrets map[string]map[string][]byte // Secret name -> data
	volumes map[string]string            // volume name -> directory
}

// newPodHost reads the pod template of workload (a StatefulSet,
// Deployment or DaemonSet).
func newPodHost(t *testing.T, workload *unstructured.Unstructured, objs []*unstructured.Unstructured, fields fieldValues, secrets map[string]map[string][]byte) *podHost {
	t.Helper()
	tmpl, ok, err := unstructured.NestedMap(workload.Object, "spec", "template", "spec")
	if !ok || err != nil {
		t.Fatalf("%s %s has no pod template (%v)", workload.GetKind(), workload.GetName(), err)
	}
	var spec corev1.PodSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(tmpl, &spec, true); err != nil {
		t.Fatalf("%s %s: the pod template is not a PodSpec: %v", workload.GetKind(), workload.GetName(), err)
	}
	h := &podHost{t: t, root: t.TempDir(), pod: spec, fields: fields, configs: map[string]map[string]string{}, secrets: secrets, volumes: map[string]string{}}
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" {
			data, _, _ := unstructured.NestedStringMap(o.Object, "data")
			h.configs[o.GetName()] = data
		}
	}
	return h
}

// container finds a container or init container by name.
func (h *podHost) container(name string) corev1.Container {
	h.t.Helper()
	for _, c := range append(append([]corev1.Container{}, h.pod.InitContainers...), h.pod.Containers...) {
		if c.Name == name {
			return c
		}
	}
	h.t.Fatalf("the pod has no container %q", name)
	return corev1.Container{}
}

// volumeDir is the directory standing for a volume, shared by the pod's
// containers as the volume is. ConfigMap and Secret volumes are filled in
// per container (mount), since their files hold paths to rewrite.
func (h *podHost) volumeDir(name string) string {
	if d, ok := h.volumes[name]; ok {
		return d
	}
	d := filepath.Join(h.root, "volumes", name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		h.t.Fatal(err)
	}
	h.volumes[name] = d
	return d
}

func (h *podHost) volume(name string) corev1.Volume {
	h.t.Helper()
	for _, v := range h.pod.Volumes {
		if v.Name == name {
			return v
		}
	}
	h.t.Fatalf("the pod mounts volume %q that it does not declare", name)
	return corev1.Volume{}
}

// hostMount is one of a container's volume mounts on this host.
type hostMount struct {
	corev1.VolumeMount
	// host is the directory standing for the volume or, with a subPath,
	// the file in it.
	host string
	// fill writes a ConfigMap's or Secret's files into the directory,
	// ConfigMap contents passed through rewrite; nil for other volumes.
	fill func(rewrite func(string) string)
}

// hostMounts lays out the container's volume mounts on this host: a
// ConfigMap or Secret mount gets a directory of its own (filled by its
// fill), other volumes the pod's directory for them (volumeDir).
func (h *podHost) hostMounts(c corev1.Container) []hostMount {
	h.t.Helper()
	var ms []hostMount
	for i, m := range c.VolumeMounts {
		v := h.volume(m.Name)
		hm := hostMount{VolumeMount: m}
		var dir string
		switch {
		case v.ConfigMap != nil || v.Secret != nil:
			// A directory of its own per mount: the files are rendered
			// for this container's paths.
			dir = filepath.Join(h.root, "mounts", c.Name, strconv.Itoa(i))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				h.t.Fatal(err)
			}
			files, mode := h.volumeFiles(v), volumeFileMode(v)
			if _, ok := files[m.SubPath]; m.SubPath != "" && !ok {
				h.t.Fatalf("container %s mounts key %s of volume %q, which the volume does not have (keys: %s)", c.Name, m.SubPath, m.Name, strings.Join(slices.Sorted(maps.Keys(files)), ", "))
			}
			hm.fill = func(rewrite func(string) string) {
				for k, b := range files {
					if m.SubPath != "" && k != m.SubPath {
						continue
					}
					if v.ConfigMap != nil {
						b = []byte(rewrite(string(b)))
					}
					if err := os.WriteFile(filepath.Join(dir, k), b, mode); err != nil {
						h.t.Fatal(err)
					}
				}
			}
		case v.EmptyDir != nil:
			// World-writable, as the kubelet makes an emptyDir, so that
			// any user the container runs as can write it.
			dir = h.volumeDir(m.Name)
			if err := os.Chmod(dir, 0o777); err != nil {
				h.t.Fatal(err)
			}
		case v.HostPath != nil || v.PersistentVolumeClaim != nil:
			dir = h.volumeDir(m.Name)
		default:
			h.t.Fatalf("volume %q: only configMap, secret, emptyDir, hostPath and persistentVolumeClaim volumes can be run here", m.Name)
		}
		hm.host = dir
		if m.SubPath != "" {
			hm.host = filepath.Join(dir, m.SubPath)
		}
		ms = append(ms, hm)
	}
	return ms
}

// volumeFileMode is the mode of a ConfigMap's or Secret's files: the
// volume's defaultMode, 0644 without one, as the kubelet writes them.
func volumeFileMode(v corev1.Volume) os.FileMode {
	var mode *int32
	if v.ConfigMap != nil {
		mode = v.ConfigMap.DefaultMode
	} else if v.Secret != nil {
		mode = v.Secret.DefaultMode
	}
	if mode == nil {
		return 0o644
	}
	return os.FileMode(*mode)
}

// mounts maps the container's mount paths to host paths, filling
// ConfigMap and Secret volumes (their file contents with mount paths
// rewritten the same way).
func (h *podHost) mounts(c corev1.Container) *strings.Replacer {
	h.t.Helper()
	ms := h.hostMounts(c)
	// Longest first, so that /etc/shoal/tls/registry is not taken for
	// /etc/shoal followed by the rest.
	sort.Slice(ms, func(i, j int) bool { return len(ms[i].MountPath) > len(ms[j].MountPath) })
	var pairs []string
	for _, m := range ms {
		pairs = append(pairs, m.MountPath, m.host)
	}
	r := strings.NewReplacer(pairs...)
	for _, m := range ms {
		if m.fill != nil {
			m.fill(r.Replace)
		}
	}
	return r
}

// volumeFiles is the content of a ConfigMap or Secret volume by file name.
func (h *podHost) volumeFiles(v corev1.Volume) map[string][]byte {
	h.t.Helper()
	out := map[string][]byte{}
	var items []corev1.KeyToPath
	if v.ConfigMap != nil {
		data, ok := h.configs[v.ConfigMap.Name]
		if !ok {
			h.t.Fatalf("volume %q: ConfigMap %s is not among the rendered objects", v.Name, v.ConfigMap.Name)
		}
		for k, s := range data {
			out[k] = []byte(s)
		}
		items = v.ConfigMap.Items
	} else {
		data, ok := h.secrets[v.Secret.SecretName]
		if !ok {
			h.t.Fatalf("volume %q: the test provides no Secret %s", v.Name, v.Secret.SecretName)
		}
		for k, b := range data {
			out[k] = b
		}
		items = v.Secret.Items
	}
	if len(items) > 0 {
		picked := map[string][]byte{}
		for _, it := range items {
			b, ok := out[it.Key]
			if !ok {
				h.t.Fatalf("volume %q projects key %s, which its source does not have", v.Name, it.Key)
			}
			picked[it.Path] = b
		}
		out = picked
	}
	return out
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) with env's value as the kubelet does; unknown
// references stay as they are.
func expand(s string, env map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// env resolves the container's environment: plain values (expanded) and
// downward API fields.
func (h *podHost) env(c corev1.Container) map[string]string {
	h.t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand(e.Value, env)
		case e.ValueFrom.FieldRef != nil:
			v, ok := h.fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				h.t.Fatalf("container %s: env %s reads field %s, which the test does not fill in", c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		default:
			h.t.Fatalf("container %s: env %s: only values and fieldRefs can be run here", c.Name, e.Name)
		}
	}
	return env
}

// command is the container's command line and environment on this host.
// binary stands for the image's entrypoint when the container has no
// command.
func (h *podHost) command(c corev1.Container, binary string) (argv []string, environ []string) {
	h.t.Helper()
	paths := h.mounts(c)
	env := h.env(c)
	for k, v := range env {
		environ = append(environ, k+"="+paths.Replace(v))
	}
	argv = append(argv, c.Command...)
	argv = append(argv, c.Args...)
	for i := range argv {
		argv[i] = paths.Replace(expand(argv[i], env))
	}
	if len(c.Command) == 0 {
		argv = append([]string{binary}, argv...)
	}
	return argv, environ
}

// checkPortsListen checks that something listens on every TCP port the
// container declares, on this host: a declared port nothing serves would
// open a firewall or network policy for nothing, and a served port the
// spec does not declare would be closed by one.
func checkPortsListen(t *testing.T, c corev1.Container) {
	t.Helper()
	for _, p := range c.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.ContainerPort)))
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Errorf("container %s, rendered port %s (%d): nothing listens on the host network: %v", c.Name, p.Name, p.ContainerPort, err)
			continue
		}
		conn.Close()
	}
}

// probeURL is the container's readiness probe as a URL on this host.
func probeURL(t *testing.T, c corev1.Container) (url, listen string) {
	t.Helper()
	return httpProbeURL(t, c, "readiness", c.ReadinessProbe)
}

// httpProbeURL is one of the container's HTTP probes (kind names it) as a
// URL on this host.
func httpProbeURL(t *testing.T, c corev1.Container, kind string, p *corev1.Probe) (url, listen string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Fatalf("container %s has no HTTP %s probe", c.Name, kind)
	}
	port := p.HTTPGet.Port.IntValue()
	if port == 0 {
		for _, cp := range c.Ports {
			if cp.Name == p.HTTPGet.Port.StrVal {
				port = int(cp.ContainerPort)
			}
		}
	}
	if port == 0 {
		t.Fatalf("container %s: the %s probe's port %s is not one of its ports", c.Name, kind, p.HTTPGet.Port.String())
	}
	host := p.HTTPGet.Host
	if host == "" {
		host = "127.0.0.1"
	}
	scheme := strings.ToLower(string(p.HTTPGet.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	listen = fmt.Sprintf("%s:%d", host, port)
	return fmt.Sprintf("%s://%s%s", scheme, listen, p.HTTPGet.Path), listen
}

// start runs container name as a process until the test ends; it is ready
// when its readiness probe answers 200.
func (h *podHost) start(name string) *testenv.Process {
	h.t.Helper()
	c := h.container(name)
	bin := testenv.Binary(h.t, path.Base(strings.SplitN(c.Image, ":", 2)[0]))
	argv, env := h.command(c, bin)
	url, listen := probeURL(h.t, c)
	p, err := testenv.Start(h.t.Context(), testenv.Options{
		Name:       c.Name + " (" + strings.Join(argv[1:], " ") + ")",
		Path:       argv[0],
		Args:       argv[1:],
		Env:        env,
		LogPath:    filepath.Join(h.root, c.Name+".log"),
		Ready:      testenv.HTTPReady(url),
		ListenAddr: listen,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		if err := p.Stop(testenv.DefaultStopTimeout); err != nil {
			h.t.Errorf("stopping %s: %v", c.Name, err)
		}
		if h.t.Failed() {
			h.t.Log(p.LogTail(40))
		}
	})
	return p
}

// run runs a container that exits (an init container) with the host's
// programs and returns its output; a non-zero exit fails the test.
func (h *podHost) run(name string) string {
	h.t.Helper()
	c := h.container(name)
	if len(c.Command) == 0 {
		h.t.Fatalf("init container %s has no command to run on the host", name)
	}
	argv, env := h.command(c, "")
	ctx, cancel := context.WithTimeout(h.t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		h.t.Fatalf("init container %s (%s): %v\n%s", name, strings.Join(argv, " "), err, out)
	}
	return string(out)
}
