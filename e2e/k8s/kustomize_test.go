package k8s

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the generated kustomize files from the chart")

// generatedHeader starts every generated kustomize file.
const generatedHeader = "# Generated from deploy/helm/shoal by `go test ./e2e/k8s -run TestKustomizeBaseIsTheChart -update`.\n# Do not edit: change the chart (or an overlay) instead.\n"

// kustomizeFiles are the kustomize files generated from the chart, by
// path relative to the repository root: the base (the chart with its
// defaults, release and namespace shoal, the ConfigMap as a
// configMapGenerator so that kustomize rolls the pods when a file
// changes) and the HDFS overlay's origin.yaml.
func kustomizeFiles(t *testing.T, root string) map[string][]byte {
	t.Helper()
	objs, _, err := helmRender{Release: "shoal", Namespace: "shoal"}.render(root)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	var resources bytes.Buffer
	resources.WriteString(generatedHeader)
	// The agents' host network and hostPath need the privileged Pod
	// Security level where the cluster enforces one.
	resources.WriteString("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shoal\n  labels:\n    pod-security.kubernetes.io/enforce: privileged\n")
	var configFiles []string
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == "shoal-config" {
			data, _, _ := unstructured.NestedStringMap(o.Object, "data")
			for _, k := range slices.Sorted(maps.Keys(data)) {
				out["deploy/kustomize/base/"+k] = []byte(strings.TrimSuffix(generatedHeader, "\n") + "\n" + data[k])
				configFiles = append(configFiles, k)
			}
			continue
		}
		dropHelmMetadata(o)
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		resources.WriteString("---\n")
		resources.Write(b)
	}
	out["deploy/kustomize/base/shoal.yaml"] = resources.Bytes()
	k := generatedHeader + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: shoal\nresources:\n  - shoal.yaml\n" +
		"configMapGenerator:\n  - name: shoal-config\n    files:\n"
	for _, f := range configFiles {
		k += "      - " + f + "\n"
	}
	out["deploy/kustomize/base/kustomization.yaml"] = []byte(k)

	hdfs, _, err := helmRender{Release: "shoal", Namespace: "shoal", Values: valueOptions{ValueFiles: []string{"deploy/helm/shoal/examples/hdfs.yaml"}}}.render(root)
	if err != nil {
		t.Fatal(err)
	}
	cm := find(t, hdfs, "ConfigMap", "shoal-config")
	originYAML, _, _ := unstructured.NestedString(cm.Object, "data", "origin.yaml")
	out["deploy/kustomize/overlays/hdfs/origin.yaml"] = []byte(strings.TrimSuffix(generatedHeader, "\n") + "\n" +
		"# The chart rendered with deploy/helm/shoal/examples/hdfs.yaml: put your namenodes in storage.\n" + originYAML)
	return out
}

// dropHelmMetadata removes what only makes sense under Helm: its labels
// and the config checksum annotation (kustomize's generated ConfigMap name
// does that job).
func dropHelmMetadata(o *unstructured.Unstructured) {
	for _, path := range [][]string{{"metadata", "labels"}, {"spec", "template", "metadata", "labels"}} {
		if l, ok, _ := unstructured.NestedStringMap(o.Object, path...); ok {
			delete(l, "helm.sh/chart")
			delete(l, "app.kubernetes.io/managed-by")
			_ = unstructured.SetNestedStringMap(o.Object, l, path...)
		}
	}
	for _, path := range [][]string{{"metadata", "annotations"}, {"spec", "template", "metadata", "annotations"}} {
		if a, ok, _ := unstructured.NestedStringMap(o.Object, path...); ok {
			delete(a, "checksum/config")
			// The claim outlives a `kubectl delete -k` only under Helm's
			// policy; kustomize users delete what they choose.
			delete(a, "helm.sh/resource-policy")
			if len(a) == 0 {
				unstructured.RemoveNestedField(o.Object, path...)
			} else {
				_ = unstructured.SetNestedStringMap(o.Object, a, path...)
			}
		}
	}
}

// TestKustomizeBaseIsTheChart fails when the generated kustomize files
// differ from what the chart renders now; -update rewrites them.
func TestKustomizeBaseIsTheChart(t *testing.T) {
	root := workspaceRoot(t)
	for rel, want := range kustomizeFiles(t, root) {
		path := filepath.Join(root, rel)
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v (go test ./e2e/k8s -run TestKustomizeBaseIsTheChart -update writes it)", rel, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the chart's rendering at line %d; run go test ./e2e/k8s -run TestKustomizeBaseIsTheChart -update", rel, firstDiffLine(got, want))
		}
	}
}

func firstDiffLine(a, b []byte) int {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}
