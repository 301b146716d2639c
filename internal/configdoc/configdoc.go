// Package configdoc renders a daemon's configuration reference from its
// config struct: every YAML key with its type, its default (the value in
// the struct given) and the doc comment of the field that declares it,
// read from the Go source. docs/config-reference.md is made of one such
// section per daemon, each kept current by a test in the daemon's package
// (see Check), so the reference cannot drift from the code.
package configdoc

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Module is the Go module whose packages' sources hold the doc comments.
const Module = "github.com/shoal-dev/shoal"

// Options tunes Render.
type Options struct {
	// Defaults replaces the default shown for a key (dotted path, as in
	// the table), for defaults that depend on the host, such as its name.
	Defaults map[string]string
}

// Render writes the Markdown table of cfg's keys. root is the module's
// directory, where the sources of cfg's packages are read.
func Render(root string, cfg any, opts Options) ([]byte, error) {
	r := &renderer{root: root, opts: opts, pkgs: map[string]*sourcePkg{}}
	var b bytes.Buffer
	b.WriteString("| Key | Type | Default | Description |\n|---|---|---|---|\n")
	v := reflect.ValueOf(cfg)
	st, err := r.structSource(v.Type())
	if err != nil {
		return nil, err
	}
	if err := r.fields(&b, "", v, st); err != nil {
		return nil, err
	}
	if len(r.undocumented) > 0 {
		return nil, fmt.Errorf("configdoc: keys without a doc comment on their field (every config field says what it is for): %s", strings.Join(r.undocumented, ", "))
	}
	return b.Bytes(), nil
}

type renderer struct {
	root         string
	opts         Options
	pkgs         map[string]*sourcePkg
	undocumented []string
}

// sourcePkg is one package's struct types and their docs.
type sourcePkg struct {
	structs map[string]*ast.StructType
	docs    map[string]string // type name -> doc comment
}

// fields writes one row per field of the struct v, recursing into nested
// structs and element structs of lists. st is the struct's declaration,
// nil when its source is not the module's.
func (r *renderer) fields(b *bytes.Buffer, prefix string, v reflect.Value, st *ast.StructType) error {
	t := v.Type()
	prevDoc := ""
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, inline, skip := yamlKey(f)
		if skip {
			continue
		}
		fast := astField(st, f.Name)
		docText := fieldDoc(fast)
		// "IngressLimit and EgressLimit cap ...": a field declared under a
		// comment that names it shares that comment.
		if docText == "" && (strings.Contains(prevDoc, f.Name) || strings.Contains(prevDoc, name)) {
			docText = prevDoc
		}
		prevDoc = docText
		key := prefix + name
		fv := v.Field(i)
		ft := f.Type

		switch {
		case isLeaf(ft):
			if docText == "" {
				r.undocumented = append(r.undocumented, key)
			}
			r.row(b, key, typeName(ft), r.defaultOf(key, fv), docText)
		case ft.Kind() == reflect.Struct:
			sub, err := r.nestedSource(ft, fast)
			if err != nil {
				return err
			}
			if inline {
				if err := r.fields(b, prefix, fv, sub); err != nil {
					return err
				}
				continue
			}
			if docText == "" {
				docText = r.typeDoc(ft)
			}
			r.row(b, key, "section", "", docText)
			if err := r.fields(b, key+".", fv, sub); err != nil {
				return err
			}
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			if docText == "" {
				r.undocumented = append(r.undocumented, key)
			}
			r.row(b, key, "list of "+ft.Elem().Name(), r.defaultOf(key, fv), docText)
			sub, err := r.structSource(ft.Elem())
			if err != nil {
				return err
			}
			if err := r.fields(b, key+"[].", reflect.New(ft.Elem()).Elem(), sub); err != nil {
				return err
			}
		default:
			return fmt.Errorf("configdoc: %s: no rendering for %s", key, ft)
		}
	}
	return nil
}

func (r *renderer) row(b *bytes.Buffer, key, typ, def, docText string) {
	fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", key, typ, def, cell(docText))
}

func (r *renderer) defaultOf(key string, v reflect.Value) string {
	if s, ok := r.opts.Defaults[key]; ok {
		return s
	}
	s := formatValue(v)
	if s == "" {
		return "empty"
	}
	return "`" + s + "`"
}

// yamlKey returns the field's YAML key as yaml.v3 reads it.
func yamlKey(f reflect.StructField) (name string, inline, skip bool) {
	tag := f.Tag.Get("yaml")
	if tag == "-" {
		return "", false, true
	}
	parts := strings.Split(tag, ",")
	for _, p := range parts[1:] {
		if p == "inline" {
			inline = true
		}
	}
	name = parts[0]
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, inline, false
}

// isDuration reports time.Duration and the packages' own Duration types
// (YAML-friendly wrappers of it).
func isDuration(t reflect.Type) bool {
	return t.Kind() == reflect.Int64 && t.Name() == "Duration"
}

// isLeaf reports whether a value of t is written as one YAML scalar, list
// or map of scalars rather than as a section of keys.
func isLeaf(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Struct:
		return false
	case reflect.Slice, reflect.Array, reflect.Map:
		return t.Elem().Kind() != reflect.Struct
	}
	return true
}

func typeName(t reflect.Type) string {
	switch {
	case isDuration(t):
		return "duration"
	case t.Name() == "ByteSize":
		return "size"
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map of " + typeName(t.Key()) + " to " + typeName(t.Elem())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	}
	return t.Kind().String()
}

// formatValue writes v as the YAML files write it: durations as "30s",
// sizes with a binary unit when exact, lists as [a, b].
func formatValue(v reflect.Value) string {
	t := v.Type()
	switch {
	case isDuration(t):
		return formatDuration(time.Duration(v.Int()))
	case t.Name() == "ByteSize":
		return formatSize(v.Int())
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		var items []string
		for i := range v.Len() {
			items = append(items, formatValue(v.Index(i)))
		}
		return "[" + strings.Join(items, ", ") + "]"
	case reflect.Map:
		var items []string
		for _, k := range v.MapKeys() {
			items = append(items, formatValue(k)+": "+formatValue(v.MapIndex(k)))
		}
		sort.Strings(items)
		return "{" + strings.Join(items, ", ") + "}"
	case reflect.String:
		return v.String()
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration writes d as the YAML files do: "5m", "24h", "1m30s".
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func formatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.suffix)
		}
	}
	return fmt.Sprint(n)
}

// cell turns a doc comment into one table cell: one line, pipes escaped.
func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

func fieldDoc(f *ast.Field) string {
	if f == nil {
		return ""
	}
	if f.Doc != nil {
		return f.Doc.Text()
	}
	if f.Comment != nil {
		return f.Comment.Text()
	}
	return ""
}

// astField finds the declaration of the field name in st.
func astField(st *ast.StructType, name string) *ast.Field {
	if st == nil {
		return nil
	}
	for _, f := range st.Fields.List {
		for _, n := range f.Names {
			if n.Name == name {
				return f
			}
		}
		if len(f.Names) == 0 { // embedded
			if id := embeddedName(f.Type); id == name {
				return f
			}
		}
	}
	return nil
}

func embeddedName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return e.Sel.Name
	case *ast.StarExpr:
		return embeddedName(e.X)
	}
	return ""
}

// nestedSource is the declaration of a nested struct: written inline in
// the parent's field (struct{...}) or a named type.
func (r *renderer) nestedSource(t reflect.Type, parent *ast.Field) (*ast.StructType, error) {
	if t.Name() == "" {
		if parent == nil {
			return nil, nil
		}
		st, _ := parent.Type.(*ast.StructType)
		return st, nil
	}
	return r.structSource(t)
}

// structSource is the declaration of the named struct type t, nil when t
// is not declared in the module.
func (r *renderer) structSource(t reflect.Type) (*ast.StructType, error) {
	p, err := r.pkg(t.PkgPath())
	if err != nil || p == nil {
		return nil, err
	}
	name := t.Name()
	// An alias (type LogConfig = daemon.LogConfig) reports the aliased
	// type's package, which is the one parsed: nothing to follow.
	return p.structs[name], nil
}

func (r *renderer) typeDoc(t reflect.Type) string {
	p, err := r.pkg(t.PkgPath())
	if err != nil || p == nil {
		return ""
	}
	return p.docs[t.Name()]
}

func (r *renderer) pkg(path string) (*sourcePkg, error) {
	if p, ok := r.pkgs[path]; ok {
		return p, nil
	}
	var dir string
	switch {
	case path == "main":
		// The daemon's own package: Render runs in its test, whose
		// working directory is that package's.
		dir = "."
	case path == Module || strings.HasPrefix(path, Module+"/"):
		dir = filepath.Join(r.root, strings.TrimPrefix(path, Module))
	default:
		r.pkgs[path] = nil
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("configdoc: reading the source of %s: %w", path, err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ParseComments)
			if err != nil {
				return nil, fmt.Errorf("configdoc: reading the source of %s: %w", path, err)
			}
			files = append(files, f)
		}
	}
	p := &sourcePkg{structs: map[string]*ast.StructType{}, docs: map[string]string{}}
	for _, file := range files {
		for _, decl := range file.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				ts := spec.(*ast.TypeSpec)
				if st, ok := ts.Type.(*ast.StructType); ok {
					p.structs[ts.Name.Name] = st
				}
				d := ts.Doc
				if d == nil && len(gd.Specs) == 1 {
					d = gd.Doc
				}
				if d != nil {
					p.docs[ts.Name.Name] = d.Text()
				}
			}
		}
	}
	r.pkgs[path] = p
	return p, nil
}
