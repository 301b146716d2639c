package configdoc

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/checkout"
)

// Reference is the file the sections go in, relative to the module root.
const Reference = "docs/config-reference.md"

// update is the flag `go generate` passes to a daemon's test binary (see
// the go:generate line of its reference_test.go).
var update = flag.Bool("update-config-reference", false, "rewrite the daemon's section of "+Reference+" instead of comparing it (go generate ./cmd/NAME)")

// Check holds the section of docs/config-reference.md generated for the
// daemon name equal to the rendering of cfg, its defaults: it fails the
// test with the first difference and the command that regenerates the
// section, or rewrites the section when the test binary is given
// -update-config-reference (what `go generate` runs). The section is the text between the lines
//
//	<!-- BEGIN generated: NAME -->
//	<!-- END generated: NAME -->
//
// so that the headings and prose around it stay written by hand.
func Check(t testing.TB, name string, cfg any, opts Options) {
	t.Helper()
	root, err := checkout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	table, err := Render(root, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, Reference)
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin := []byte("<!-- BEGIN generated: " + name + " -->\n")
	end := []byte("<!-- END generated: " + name + " -->")
	i := bytes.Index(file, begin)
	j := bytes.Index(file, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no section for %s: add the lines %q and %q where it goes, then run go generate ./cmd/%s", Reference, name, begin, end, name)
	}
	got := file[i+len(begin) : j]
	if bytes.Equal(got, table) {
		return
	}
	if *update {
		out := append(append(append([]byte{}, file[:i+len(begin)]...), table...), file[j:]...)
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the %s section of %s", name, Reference)
		return
	}
	t.Fatalf("%s is not %s's config as the code has it; regenerate it with `go generate ./cmd/%s` and commit the file.\nfirst difference:\n file: %s\n code: %s",
		Reference, name, name, firstDiff(got, table), firstDiff(table, got))
}

// firstDiff returns a's first line that b does not have at that place.
func firstDiff(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for k := range al {
		if k >= len(bl) || al[k] != bl[k] {
			return fmt.Sprintf("line %d: %s", k+1, al[k])
		}
	}
	return "(nothing more)"
}
