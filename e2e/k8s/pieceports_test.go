package k8s

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// TestPiecePortsArePinned checks that the origin seeder's and the agent's
// piece data paths get fixed ports (firewalls and network policies name
// them; unset, the binaries pick free ones): each is a named container
// port, a port of the component's headless Service, and the listen address
// in the rendered config. A piece port of 0 turns the data path off: no
// port rendered, pieceListen "off".
func TestPiecePortsArePinned(t *testing.T) {
	root := workspaceRoot(t)
	for _, tc := range []struct {
		name                      string
		values                    []string
		seeder, agent             int64  // container and Service ports; 0: none
		seederListen, agentListen string // pieceListen in origin.yaml and peer-agent.yaml
	}{
		{name: "defaults", seeder: 7005, agent: 7004, seederListen: ":7005", agentListen: ":7004"},
		{name: "moved", values: []string{"origin.seeder.piecePort=17005", "agent.piecePort=17004"},
			seeder: 17005, agent: 17004, seederListen: ":17005", agentListen: ":17004"},
		{name: "off", values: []string{"origin.seeder.piecePort=0", "agent.piecePort=0"},
			seederListen: "off", agentListen: "off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, _, err := helmRender{Release: "shoal", Namespace: "shoal", Values: valueOptions{Values: tc.values}}.render(root)
			if err != nil {
				t.Fatal(err)
			}
			sts := find(t, objs, "StatefulSet", "-origin")
			if got := containerPort(t, sts, "origin", "pieces"); got != tc.seeder {
				t.Errorf("origin container port \"pieces\" is %d, want %d (origin.seeder.piecePort)", got, tc.seeder)
			}
			if got := servicePort(t, find(t, objs, "Service", "-origin-headless"), "pieces"); got != tc.seeder {
				t.Errorf("headless origin Service port \"pieces\" is %d, want %d", got, tc.seeder)
			}
			ds := find(t, objs, "DaemonSet", "-agent")
			if got := containerPort(t, ds, "agent", "pieces"); got != tc.agent {
				t.Errorf("agent container port \"pieces\" is %d, want %d (agent.piecePort)", got, tc.agent)
			}
			if got := servicePort(t, find(t, objs, "Service", "-agent"), "pieces"); got != tc.agent {
				t.Errorf("agent Service port \"pieces\" is %d, want %d", got, tc.agent)
			}

			cm := find(t, objs, "ConfigMap", "-config")
			for _, f := range []struct{ file, section, want string }{
				{"origin.yaml", "seeder", tc.seederListen},
				{"peer-agent.yaml", "swarm", tc.agentListen},
			} {
				var cfg map[string]any
				configFile(t, cm, f.file, &cfg)
				got, _, _ := unstructured.NestedString(cfg, f.section, "pieceListen")
				if got != f.want {
					t.Errorf("%s sets %s.pieceListen %q, want %q", f.file, f.section, got, f.want)
				}
			}
		})
	}
}

// containerPort is the port called name of the workload's container, 0
// when it has none.
func containerPort(t *testing.T, workload *unstructured.Unstructured, container, name string) int64 {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(workload.Object, "spec", "template", "spec", "containers")
	for _, c := range cs {
		cm, _ := c.(map[string]any)
		if cm["name"] != container {
			continue
		}
		ports, _, _ := unstructured.NestedSlice(cm, "ports")
		return namedPort(ports, name, "containerPort")
	}
	t.Fatalf("%s/%s has no container %q", workload.GetKind(), workload.GetName(), container)
	return 0
}

// servicePort is the Service's port called name, 0 when it has none.
func servicePort(t *testing.T, svc *unstructured.Unstructured, name string) int64 {
	t.Helper()
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	return namedPort(ports, name, "port")
}

func namedPort(ports []any, name, field string) int64 {
	for _, p := range ports {
		pm, _ := p.(map[string]any)
		if pm["name"] == name {
			n, _, _ := unstructured.NestedFieldNoCopy(pm, field)
			switch n := n.(type) {
			case int64:
				return n
			case float64:
				return int64(n)
			}
		}
	}
	return 0
}

// configFile decodes the ConfigMap's key into v.
func configFile(t *testing.T, cm *unstructured.Unstructured, key string, v any) {
	t.Helper()
	s, ok, _ := unstructured.NestedString(cm.Object, "data", key)
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", cm.GetName(), key)
	}
	if err := yaml.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("ConfigMap %s, %s: %v\n%s", cm.GetName(), key, err, s)
	}
}
