package k8s

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// prometheusOperator is the module whose published ServiceMonitor CRD is
// applied before the chart's ServiceMonitors (prometheus-operator's own
// schema, never a hand-written one). v0.85.0 is the newest version of the
// root module on the Go module proxy.
const prometheusOperator = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

// TestChartDocsCombinationsAreAccepted renders the chart for every helm
// command docs/kubernetes.md shows and applies every object to the API
// server. Each combination gets a namespace of its own, so that none
// updates another's objects.
func TestChartDocsCombinationsAreAccepted(t *testing.T) {
	root := workspaceRoot(t)
	combos := docCombinations(t, root)
	c := apiServer(t)
	a := c.applier(t)
	applyServiceMonitorCRD(t, a)
	for i, h := range combos {
		t.Run(fmt.Sprintf("%d", i), func(t *testing.T) {
			h.Namespace = fmt.Sprintf("docs-%d-%s", i, h.Namespace)
			objs, _, err := h.render(root)
			if err != nil {
				t.Fatalf("%s: %v", h.Name, err)
			}
			t.Logf("%s: %d objects", h.Name, len(objs))
			a.applyAll(t, objs)
		})
	}
}

// TestKustomizeOverlaysAreAccepted builds every overlay under
// deploy/kustomize/overlays and applies it, each in a namespace of its own.
func TestKustomizeOverlaysAreAccepted(t *testing.T) {
	root := workspaceRoot(t)
	dirs, err := filepath.Glob(filepath.Join(root, "deploy/kustomize/overlays/*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no overlays under deploy/kustomize/overlays (%v)", err)
	}
	c := apiServer(t)
	a := c.applier(t)
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			objs, err := renderKustomize(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if namespaced(o.GetKind()) {
					o.SetNamespace("kustomize-" + name)
				}
			}
			t.Logf("overlay %s: %d objects", name, len(objs))
			a.applyAll(t, objs)
		})
	}
}

// TestAppliedObjectsKeepTheirSettings reads back what the API server stored
// for the default install and checks the settings a dropped or defaulted
// field would lose.
func TestAppliedObjectsKeepTheirSettings(t *testing.T) {
	root := workspaceRoot(t)
	h := helmRender{Name: "defaults", Release: "shoal", Namespace: "readback"}
	objs, _, err := h.render(root)
	if err != nil {
		t.Fatal(err)
	}
	c := apiServer(t)
	a := c.applier(t)
	a.applyAll(t, objs)
	ctx := t.Context()

	ds, err := a.get(ctx, schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}, "readback", "shoal-agent")
	if err != nil {
		t.Fatal(err)
	}
	if hn, _, _ := unstructured.NestedBool(ds.Object, "spec", "template", "spec", "hostNetwork"); !hn {
		t.Error("the stored DaemonSet lost hostNetwork: true")
	}
	if dp, _, _ := unstructured.NestedString(ds.Object, "spec", "template", "spec", "dnsPolicy"); dp != "ClusterFirstWithHostNet" {
		t.Errorf("the stored DaemonSet's dnsPolicy is %q, want ClusterFirstWithHostNet (the agent resolves Service names)", dp)
	}
	tol, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "tolerations")
	if len(tol) == 0 {
		t.Error("the stored DaemonSet has no tolerations: tainted nodes would have no agent")
	}

	sts, err := a.get(ctx, schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}, "readback", "shoal-origin")
	if err != nil {
		t.Fatal(err)
	}
	if r, _, _ := unstructured.NestedInt64(sts.Object, "spec", "replicas"); r != 3 {
		t.Errorf("the stored StatefulSet has %d replicas, want the default 3", r)
	}
	svc, err := a.get(ctx, schema.GroupVersionResource{Version: "v1", Resource: "services"}, "readback", "shoal-origin-headless")
	if err != nil {
		t.Fatal(err)
	}
	if p, _, _ := unstructured.NestedBool(svc.Object, "spec", "publishNotReadyAddresses"); !p {
		t.Error("the headless Service does not publish not-ready addresses: origin nodes starting together would not find each other")
	}
}

var crdOnce sync.Once

// applyServiceMonitorCRD applies prometheus-operator's ServiceMonitor CRD
// from its module and waits until the API serves the kind.
func applyServiceMonitorCRD(t *testing.T, a *applier) {
	t.Helper()
	var err error
	crdOnce.Do(func() { err = installServiceMonitorCRD(t.Context(), a) })
	if err != nil {
		testenv.Unavailable(t, "the ServiceMonitor CRD from %s: %v", prometheusOperator, err)
	}
}

func installServiceMonitorCRD(ctx context.Context, a *applier) error {
	dir, err := moduleDir(ctx, prometheusOperator)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"))
	if err != nil {
		return err
	}
	objs, err := decodeObjects(b)
	if err != nil {
		return err
	}
	if len(objs) != 1 || objs[0].GetKind() != "CustomResourceDefinition" {
		return fmt.Errorf("want one CustomResourceDefinition in the file, found %d objects", len(objs))
	}
	if err := a.apply(ctx, objs[0]); err != nil {
		return err
	}
	// Established: the API serves the new kind.
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	var getErr error
	if err := eventually.Wait(time.Minute, func() bool {
		var crd *unstructured.Unstructured
		crd, getErr = a.dyn.Resource(crds).Get(ctx, objs[0].GetName(), metav1.GetOptions{})
		return getErr == nil && established(crd) || ctx.Err() != nil
	}); err != nil {
		return fmt.Errorf("CRD %s not established: %v (last get: %v)", objs[0].GetName(), err, getErr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	a.mapper.Reset()
	return nil
}

func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// moduleDir downloads a module version (checked against the checksum
// database) into the module cache and returns its directory. It runs
// outside Shoal's module so that go.sum is left alone.
func moduleDir(ctx context.Context, modVersion string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", modVersion)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w\n%s%s", modVersion, err, out, stderr.String())
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", modVersion, err)
	}
	if m.Error != "" || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", modVersion, strings.TrimSpace(m.Error))
	}
	return m.Dir, nil
}
