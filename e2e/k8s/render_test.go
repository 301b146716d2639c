package k8s

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	commonutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/strvals"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// kubeVersion is the Kubernetes release everything is checked against:
// the kube-apiserver built from k8s.io/kubernetes in tools/kube-apiserver
// (its go.mod pins the same release) and the client libraries helm brings.
const kubeVersion = "v1.37.2"

// chartDir is the chart, relative to the workspace root.
const chartDir = "deploy/helm/shoal"

// helmRender is one `helm install|template` invocation: what docs show.
type helmRender struct {
	// Name says where the combination comes from, for messages.
	Name      string
	Release   string
	Namespace string
	Values    valueOptions
}

// valueOptions are helm's -f, --set, --set-string and --set-json, merged in
// that order as helm's cli/values.Options.MergeValues does (its getters,
// for remote value files, are not needed here).
type valueOptions struct {
	ValueFiles   []string
	JSONValues   []string
	Values       []string
	StringValues []string
}

func (o valueOptions) merge(root string) (map[string]any, error) {
	base := map[string]any{}
	for _, f := range o.ValueFiles {
		// Value files in the docs are relative to the repository root.
		if !filepath.IsAbs(f) {
			f = filepath.Join(root, f)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		m, err := loader.LoadValues(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", f, err)
		}
		base = loader.MergeMaps(base, m)
	}
	for _, v := range o.JSONValues {
		if err := strvals.ParseJSON(v, base); err != nil {
			return nil, fmt.Errorf("--set-json %s: %w", v, err)
		}
	}
	for _, v := range o.Values {
		if err := strvals.ParseInto(v, base); err != nil {
			return nil, fmt.Errorf("--set %s: %w", v, err)
		}
	}
	for _, v := range o.StringValues {
		if err := strvals.ParseIntoString(v, base); err != nil {
			return nil, fmt.Errorf("--set-string %s: %w", v, err)
		}
	}
	return base, nil
}

// render renders the chart as `helm template` does (the steps of helm's
// action.Install in client-only dry-run mode: the chart's kubeVersion
// constraint, the values coalesced and checked against a schema if the
// chart has one, the templates rendered) and returns its objects and
// NOTES.txt. helm's engine is used rather than action.Install, which would
// bring helm's release storage, registry and plugin runtimes into the test.
func (h helmRender) render(root string) ([]*unstructured.Unstructured, string, error) {
	chrt, err := loader.Load(filepath.Join(root, chartDir))
	if err != nil {
		return nil, "", fmt.Errorf("loading the chart: %w", err)
	}
	vals, err := h.Values.merge(root)
	if err != nil {
		return nil, "", fmt.Errorf("reading values: %w", err)
	}
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, "", err
	}
	caps := common.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	if c := chrt.Metadata.KubeVersion; c != "" && !chartutil.IsCompatibleRange(c, caps.KubeVersion.String()) {
		return nil, "", fmt.Errorf("the chart requires kubeVersion %s, which excludes Kubernetes %s", c, kubeVersion)
	}
	top, err := commonutil.ToRenderValuesWithSchemaValidation(chrt, vals, common.ReleaseOptions{
		Name: h.Release, Namespace: h.Namespace, Revision: 1, IsInstall: true,
	}, caps, false)
	if err != nil {
		return nil, "", fmt.Errorf("values: %w", err)
	}
	files, err := engine.Render(chrt, top)
	if err != nil {
		return nil, "", fmt.Errorf("rendering the chart: %w", err)
	}
	var notes string
	var all bytes.Buffer
	for _, name := range slices.Sorted(maps.Keys(files)) {
		switch {
		case strings.HasSuffix(name, "/NOTES.txt"):
			notes = files[name]
		case strings.HasSuffix(name, ".yaml"):
			all.WriteString("\n---\n" + files[name])
		}
	}
	objs, err := decodeObjects(all.Bytes())
	if err != nil {
		return nil, "", err
	}
	// Objects without a namespace in a namespaced kind land in the
	// release's namespace, as `helm install -n` does.
	for _, o := range objs {
		if o.GetNamespace() == "" && namespaced(o.GetKind()) {
			o.SetNamespace(h.Namespace)
		}
	}
	return objs, notes, nil
}

// renderKustomize builds a kustomization directory with krusty, as
// `kubectl apply -k` does.
func renderKustomize(dir string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	b, err := m.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return decodeObjects(b)
}

// decodeObjects splits a YAML stream into objects, skipping empty
// documents.
func decodeObjects(b []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decoding rendered YAML (document %d): %w", len(out)+1, err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// clusterScoped are the kinds deploy/ may render that have no namespace.
var clusterScoped = map[string]bool{
	"Namespace": true, "CustomResourceDefinition": true, "ClusterRole": true,
	"ClusterRoleBinding": true, "PriorityClass": true, "StorageClass": true,
}

func namespaced(kind string) bool { return !clusterScoped[kind] }

// find returns the one object of kind whose name ends with suffix.
func find(t testing.TB, objs []*unstructured.Unstructured, kind, suffix string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && strings.HasSuffix(o.GetName(), suffix) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		var names []string
		for _, o := range objs {
			names = append(names, o.GetKind()+"/"+o.GetName())
		}
		t.Fatalf("want one %s named *%s among the rendered objects, found %d: %s", kind, suffix, len(found), strings.Join(names, ", "))
	}
	return found[0]
}

// workspaceRoot is the repository root for a test.
func workspaceRoot(t testing.TB) string {
	t.Helper()
	return testenv.ForTest(t).Root
}

// readFile reads a file of the repository.
func readFile(t testing.TB, root, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKubeVersionIsTheBuiltRelease holds kubeVersion, what charts are
// rendered for, equal to the release tools/kube-apiserver builds.
func TestKubeVersionIsTheBuiltRelease(t *testing.T) {
	root := workspaceRoot(t)
	gomod := string(readFile(t, root, filepath.Join(kubeAPIServer.Dir, "go.mod")))
	m := regexp.MustCompile(`(?m)^\s*k8s\.io/kubernetes (v\S+)`).FindStringSubmatch(gomod)
	if m == nil {
		t.Fatalf("%s/go.mod does not require k8s.io/kubernetes", kubeAPIServer.Dir)
	}
	if m[1] != kubeVersion {
		t.Errorf("%s/go.mod builds kube-apiserver %s, but charts are rendered for kubeVersion %s", kubeAPIServer.Dir, m[1], kubeVersion)
	}
}
