package k8s

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/testpki"
)

// kubeAPIServer is how the test API server is built: the release module
// pinned in tools/kube-apiserver/go.mod, with the version the release
// build stamps (without it /version says v0.0.0-master).
var kubeAPIServer = testenv.ModuleTool{
	Dir:     "e2e/k8s/tools/kube-apiserver",
	Package: "k8s.io/kubernetes/cmd/kube-apiserver",
	Ldflags: "-s -w -X k8s.io/component-base/version.gitVersion=" + kubeVersion +
		" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37",
}

// etcdBinary is Debian's etcd-server (.ci/run installs it).
const etcdBinary = "/usr/bin/etcd"

// cluster is a kube-apiserver on its own etcd, shared by the package's
// tests (it takes a while to start).
type cluster struct {
	dir   string
	procs []*testenv.Process
	etcd  *testenv.Process
	cfg   *rest.Config

	mu       sync.Mutex
	warnings []string
}

var shared testenv.Shared[*cluster]

func TestMain(m *testing.M) {
	os.Exit(shared.Main(m, "e2e/k8s", (*cluster).stop))
}

// apiServer returns the shared API server, starting it on first use.
func apiServer(t *testing.T) *cluster {
	t.Helper()
	if _, err := os.Stat(etcdBinary); err != nil {
		testenv.Unavailable(t, "etcd: %v (Debian: apt-get install etcd-server)", err)
	}
	w := testenv.ForTest(t)
	start := time.Now()
	bin, err := w.BuildModuleTool(t.Context(), kubeAPIServer)
	if err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("built kube-apiserver %s in %s", kubeVersion, d.Round(time.Second))
	}
	return shared.Get(t, "kube-apiserver and etcd", func() (*cluster, error) {
		// One key serves TLS and signs service account tokens: a
		// throwaway cluster needs no more. The CA is valid for an hour,
		// longer than the package's tests run.
		ca := testpki.NewCA(t, "kube-apiserver e2e CA")
		cert, key := ca.Issue(t, "kube-apiserver", 2, x509.ExtKeyUsageServerAuth)
		return startCluster(bin, ca.PEM, cert, key)
	})
}

func startCluster(apiserverBin string, caPEM, certPEM, keyPEM []byte) (*cluster, error) {
	dir, err := os.MkdirTemp("", "shoal-k8s-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir}
	pki := filepath.Join(dir, "pki")
	if err = os.MkdirAll(pki, 0o700); err == nil {
		err = errors.Join(os.WriteFile(filepath.Join(pki, "serving.crt"), certPEM, 0o600),
			os.WriteFile(filepath.Join(pki, "serving.key"), keyPEM, 0o600))
	}
	if err != nil {
		return nil, errors.Join(err, c.stop())
	}
	// The processes outlive the test that started them: TestMain stops
	// them, so they get a context of their own.
	ctx := context.Background()
	etcdURL, err := c.startEtcd(ctx)
	if err == nil {
		err = c.startAPIServer(ctx, apiserverBin, etcdURL, caPEM)
	}
	if err != nil {
		return nil, errors.Join(err, c.stop())
	}
	return c, nil
}

func (c *cluster) stop() error {
	var errs []error
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		err := p.Stop(testenv.DefaultStopTimeout)
		// etcd shuts down on SIGTERM, then raises it again on itself:
		// that exit is a clean one.
		var exit *exec.ExitError
		if p == c.etcd && errors.As(err, &exit) {
			if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
				err = nil
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%w\n%s", err, p.LogTail(30)))
		}
	}
	testenv.RemoveDir("e2e/k8s", c.dir)
	return errors.Join(errs...)
}

// retryPorts runs start with fresh ports until it does not fail on a port
// another process took in the meantime.
func retryPorts(start func() error) error {
	var err error
	for range 3 {
		if err = start(); err == nil || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
	}
	return err
}

func (c *cluster) startEtcd(ctx context.Context) (string, error) {
	var url string
	err := retryPorts(func() error {
		client, err := testenv.FreeAddr()
		if err != nil {
			return err
		}
		peer, err := testenv.FreeAddr()
		if err != nil {
			return err
		}
		url = "http://" + client
		p, err := testenv.Start(ctx, testenv.Options{
			Name: "etcd " + client,
			Path: etcdBinary,
			Args: []string{
				// A data directory per attempt: one bootstrapped with
				// another attempt's peer address would not start.
				"--name=shoal-e2e", "--data-dir=" + filepath.Join(c.dir, "etcd-"+strings.ReplaceAll(client, ":", "-")),
				"--listen-client-urls=" + url, "--advertise-client-urls=" + url,
				"--listen-peer-urls=http://" + peer, "--initial-advertise-peer-urls=http://" + peer,
				"--initial-cluster=shoal-e2e=http://" + peer,
				// A test cluster: fsync on every write only slows it down.
				"--unsafe-no-fsync",
			},
			LogPath:    filepath.Join(c.dir, "etcd.log"),
			Ready:      testenv.HTTPReady(url + "/health"),
			ListenAddr: client,
		})
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
		c.etcd = p
		return nil
	})
	return url, err
}

func (c *cluster) startAPIServer(ctx context.Context, bin, etcdURL string, caPEM []byte) error {
	pki := filepath.Join(c.dir, "pki")
	const token = "shoal-e2e-admin-token"
	if err := os.WriteFile(filepath.Join(pki, "tokens.csv"), []byte(token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		return err
	}
	return retryPorts(func() error {
		addr, err := testenv.FreeAddr()
		if err != nil {
			return err
		}
		_, port, _ := net.SplitHostPort(addr)
		cfg := &rest.Config{
			Host:            "https://" + addr,
			BearerToken:     token,
			TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
			QPS:             200,
			Burst:           400,
			WarningHandler:  c,
		}
		p, err := testenv.Start(ctx, testenv.Options{
			Name: "kube-apiserver " + addr,
			Path: bin,
			Args: []string{
				"--etcd-servers=" + etcdURL,
				"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + port,
				"--tls-cert-file=" + filepath.Join(pki, "serving.crt"),
				"--tls-private-key-file=" + filepath.Join(pki, "serving.key"),
				"--cert-dir=" + pki,
				"--token-auth-file=" + filepath.Join(pki, "tokens.csv"),
				"--authorization-mode=AlwaysAllow",
				"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
				"--service-account-key-file=" + filepath.Join(pki, "serving.key"),
				"--service-account-signing-key-file=" + filepath.Join(pki, "serving.key"),
				"--service-cluster-ip-range=10.96.0.0/16",
				// The kubernetes Service's endpoints would be this loopback
				// address, which the reconciler refuses.
				"--endpoint-reconciler-type=none",
				// Fewer moving parts in a test: no request fairness queues,
				// no profiling endpoints.
				"--enable-priority-and-fairness=false", "--profiling=false",
			},
			LogPath:      filepath.Join(c.dir, "kube-apiserver.log"),
			Ready:        readyz(cfg),
			ReadyTimeout: 3 * time.Minute,
			ListenAddr:   addr,
		})
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
		c.cfg = cfg
		return nil
	})
}

// readyz wants 200 from the API server's /readyz, every check passed.
func readyz(cfg *rest.Config) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		tc, err := rest.TLSConfigFor(cfg)
		if err != nil {
			return err
		}
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		defer client.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/readyz", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+cfg.BearerToken)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz: %s", resp.Status)
		}
		return nil
	}
}

// HandleWarningHeader records the API server's warnings (deprecated APIs,
// ignored fields...): a test that applies objects fails on any.
func (c *cluster) HandleWarningHeader(code int, agent, text string) {
	if code != 299 || text == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.warnings = append(c.warnings, text)
}

func (c *cluster) takeWarnings() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.warnings
	c.warnings = nil
	return w
}

// applier applies objects to the cluster with server-side apply.
type applier struct {
	c      *cluster
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func (c *cluster) applier(t *testing.T) *applier {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{c: c, dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

// apply server-side applies obj with strict field validation: a field the
// API does not know is an error, not a silently dropped setting.
func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		// A kind registered a moment ago (a CRD) is not in the cache yet.
		a.mapper.Reset()
		if mapping, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return fmt.Errorf("%s %s: %w", gvk, obj.GetName(), err)
		}
	}
	data, err := json.Marshal(obj.Object)
	if err != nil {
		return err
	}
	force := true
	var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == "namespace" {
		ri = a.dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
	}
	_, err = ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
		FieldManager: "shoal-e2e", Force: &force, FieldValidation: "Strict",
	})
	if err != nil {
		return fmt.Errorf("applying %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// applyAll applies objs (their namespaces first) and fails the test with
// every object the API server refused or warned about.
func (a *applier) applyAll(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := t.Context()
	namespaces := map[string]bool{}
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" && !namespaces[ns] {
			namespaces[ns] = true
			nsObj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns},
			}}
			if err := a.apply(ctx, nsObj); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.c.takeWarnings()
	var errs []error
	for _, o := range objs {
		if err := a.apply(ctx, o); err != nil {
			errs = append(errs, err)
		}
		for _, w := range a.c.takeWarnings() {
			errs = append(errs, fmt.Errorf("%s %s/%s: the API server warned: %s", o.GetKind(), o.GetNamespace(), o.GetName(), w))
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("the API server (kube-apiserver %s) did not accept every object:\n%v", kubeVersion, err)
	}
}

// get reads back an applied object.
func (a *applier) get(ctx context.Context, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	return a.dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
}
