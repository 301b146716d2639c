package k8s

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dashboard is the Grafana dashboard over Shoal's metrics.
const dashboard = "deploy/grafana/shoal.json"

// registeredMetric is a metric Shoal's code registers: its series names
// (a histogram's _bucket, _sum and _count) and label names.
type registeredMetric struct {
	series []string
	labels []string
}

// registeredMetrics reads the metric definitions in Shoal's code (pkg/,
// cmd/ and internal/, tests excluded): every prometheus.*Opts literal, with
// Namespace, Subsystem and Name resolved through the package's string
// constants, the label names of the *Vec constructor it is passed to, and
// every prometheus.NewDesc. A definition whose name cannot be read is an
// error, so that a metric never goes unseen.
func registeredMetrics(t *testing.T, root string) map[string]registeredMetric {
	t.Helper()
	out := map[string]registeredMetric{}
	for _, top := range []string{"pkg", "cmd", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(dir string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return err
			}
			return packageMetrics(dir, out)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(out) == 0 {
		t.Fatal("found no metric definitions in the code: the extractor is broken")
	}
	return out
}

// packageMetrics adds the metrics defined in the Go package in dir.
func packageMetrics(dir string, out map[string]registeredMetric) error {
	fset := token.NewFileSet()
	var files []*ast.File
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, 0)
		if err != nil {
			return err
		}
		files = append(files, f)
	}
	// The package's string constants and string variables initialised
	// with a literal, wherever declared (package level or in a function).
	consts := map[string]string{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok || len(vs.Names) != len(vs.Values) {
				return true
			}
			for i, id := range vs.Names {
				if s, ok := stringLit(vs.Values[i]); ok {
					consts[id.Name] = s
				}
			}
			return true
		})
	}
	str := func(e ast.Expr) (string, error) {
		if s, ok := stringLit(e); ok {
			return s, nil
		}
		if id, ok := e.(*ast.Ident); ok {
			if s, ok := consts[id.Name]; ok {
				return s, nil
			}
		}
		return "", fmt.Errorf("%s: a metric name part that is neither a string literal nor a string constant", fset.Position(e.Pos()))
	}
	var firstErr error
	add := func(name, kind string, labels []string) {
		var series []string
		switch kind {
		case "HistogramOpts":
			series = []string{name + "_bucket", name + "_sum", name + "_count"}
		case "SummaryOpts":
			series = []string{name, name + "_sum", name + "_count"}
		default:
			series = []string{name}
		}
		out[name] = registeredMetric{series: series, labels: labels}
	}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			fn := selectorName(call.Fun, "prometheus")
			switch {
			case fn == "NewDesc" && len(call.Args) >= 3:
				name, err := str(call.Args[0])
				if err != nil {
					firstErr = cmpErr(firstErr, err)
					return true
				}
				add(name, "", stringSlice(call.Args[2]))
			case strings.HasPrefix(fn, "New"):
				for i, a := range call.Args {
					lit, ok := a.(*ast.CompositeLit)
					if !ok {
						continue
					}
					kind := selectorName(lit.Type, "prometheus")
					if !strings.HasSuffix(kind, "Opts") {
						continue
					}
					parts := map[string]string{}
					for _, el := range lit.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						key, _ := kv.Key.(*ast.Ident)
						if key == nil || (key.Name != "Namespace" && key.Name != "Subsystem" && key.Name != "Name") {
							continue
						}
						s, err := str(kv.Value)
						if err != nil {
							firstErr = cmpErr(firstErr, err)
							return true
						}
						parts[key.Name] = s
					}
					var labels []string
					if strings.HasSuffix(fn, "Vec") && i+1 < len(call.Args) {
						labels = stringSlice(call.Args[i+1])
					}
					add(fqName(parts["Namespace"], parts["Subsystem"], parts["Name"]), strings.TrimPrefix(kind, "Const"), labels)
				}
			}
			return true
		})
	}
	return firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// fqName joins the parts as prometheus.BuildFQName does.
func fqName(ns, sub, name string) string {
	var parts []string
	for _, p := range []string{ns, sub, name} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "_")
}

func selectorName(e ast.Expr, pkg string) string {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return ""
	}
	if id, ok := sel.X.(*ast.Ident); ok && id.Name == pkg {
		return sel.Sel.Name
	}
	return ""
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func stringSlice(e ast.Expr) []string {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	var out []string
	for _, el := range lit.Elts {
		if s, ok := stringLit(el); ok {
			out = append(out, s)
		}
	}
	return out
}

// selector matches a metric selector in PromQL: a name followed by its
// label matchers.
var selector = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)

// matcher matches one label matcher inside a selector.
var matcher = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)

// dashboardExprs returns every PromQL expression in the dashboard (panel
// targets, variables), by where it is.
func dashboardExprs(t *testing.T, b []byte) map[string]string {
	t.Helper()
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboard, err)
	}
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || (k == "query" && strings.Contains(path, "templating"))) {
					out[path+"."+k] = s
				}
				walk(path+"."+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	walk("", d)
	return out
}

// TestDashboardReferencesRegisteredMetrics fails when the Grafana
// dashboard asks for a metric name, or a label of it, that Shoal's code
// does not register: a panel that would stay empty.
func TestDashboardReferencesRegisteredMetrics(t *testing.T) {
	root := workspaceRoot(t)
	metrics := registeredMetrics(t, root)
	series := map[string]registeredMetric{}
	for _, m := range metrics {
		for _, s := range m.series {
			series[s] = m
		}
	}
	exprs := dashboardExprs(t, readFile(t, root, dashboard))
	if len(exprs) == 0 {
		t.Fatalf("%s has no PromQL expressions", dashboard)
	}
	used := 0
	for _, where := range slices.Sorted(maps.Keys(exprs)) {
		expr := exprs[where]
		checked := map[string]bool{}
		for _, m := range selector.FindAllStringSubmatch(expr, -1) {
			name, matchers := m[1], m[2]
			if name == "" || strings.HasPrefix(matchers, "__name__") {
				continue
			}
			used++
			checked[name] = true
			reg, ok := series[name]
			if !ok {
				t.Errorf("%s: metric %s is not registered by Shoal's code (%s)", dashboard, name, where)
				continue
			}
			for _, lm := range matcher.FindAllStringSubmatch(matchers, -1) {
				l := lm[1]
				// Prometheus adds job and instance; histograms have le.
				if l == "job" || l == "instance" || (l == "le" && strings.HasSuffix(name, "_bucket")) || slices.Contains(reg.labels, l) {
					continue
				}
				t.Errorf("%s: %s has no label %q (it has %q) (%s)", dashboard, name, l, reg.labels, where)
			}
		}
		// A shoal_ name anywhere else (without a selector) must exist too.
		for _, name := range regexp.MustCompile(`shoal_[a-z0-9_]+`).FindAllString(expr, -1) {
			if _, ok := series[name]; !ok && !checked[name] {
				t.Errorf("%s: metric %s is not registered by Shoal's code (%s)", dashboard, name, where)
			}
		}
	}
	t.Logf("%s: %d metric selectors in %d expressions, checked against %d registered metrics", dashboard, used, len(exprs), len(metrics))
}
