package checkout

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRootFindsShoalsGoModAndPassesOverOthers(t *testing.T) {
	root := t.TempDir()
	nested := filepath.Join(root, "tools", "x")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(dir, content string) {
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(root, "// Shoal\nmodule \"github.com/shoal-dev/shoal\"\n\ngo 1.26\n")
	write(filepath.Join(root, "tools"), "module example.com/tools\n")
	got, err := Root(nested)
	if err != nil || got != root {
		t.Fatalf("Root(%s) = %q, %v; want %q (passing over tools/go.mod)", nested, got, err, root)
	}

	other := t.TempDir()
	write(other, "module github.com/shoal-dev/shoal-fork\n")
	if got, err := Root(other); err == nil || !strings.Contains(err.Error(), "no go.mod of module github.com/shoal-dev/shoal in "+other) {
		t.Fatalf("Root outside a checkout = %q, %v; want an error naming the module and where it looked", got, err)
	}
}

func TestFromWorkingDirFindsThisCheckout(t *testing.T) {
	got, err := FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(got, "internal", "checkout", "checkout.go")); err != nil {
		t.Fatalf("FromWorkingDir() = %s, which does not hold this package: %v", got, err)
	}
}
