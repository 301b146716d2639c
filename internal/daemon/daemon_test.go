package daemon

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadYAMLOverlaysDefaultsAndRejectsUnknownKeys(t *testing.T) {
	type cfg struct {
		A string    `yaml:"a"`
		B string    `yaml:"b"`
		L LogConfig `yaml:"log"`
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("b: file\nlog:\n  level: debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := cfg{A: "default", B: "default"}
	if err := LoadYAML(good, &c); err != nil {
		t.Fatal(err)
	}
	if c.A != "default" || c.B != "file" || c.L.Level != "debug" {
		t.Fatalf("loaded %+v", c)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("c: typo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LoadYAML(bad, &c); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("unknown key: err = %v, want an error naming the file", err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LoadYAML(empty, &c); err != nil {
		t.Fatalf("an empty file is all defaults, got %v", err)
	}
}

func TestOverridesOnlyFlagsGiven(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	a := fs.String("a", "", "")
	b := fs.String("b", "", "")
	if err := fs.Parse([]string{"-a", "flag"}); err != nil {
		t.Fatal(err)
	}
	dstA, dstB := "file", "file"
	override := Overrides(fs)
	override("a", &dstA, *a)
	override("b", &dstB, *b)
	if dstA != "flag" || dstB != "file" {
		t.Fatalf("a=%q b=%q, want flag and file", dstA, dstB)
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l, err := LogConfig{Level: "warn", Format: "json"}.Logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown"`) {
		t.Fatalf("log output %q", out)
	}
	if _, err := (LogConfig{Level: "loud"}).Logger(&buf); err == nil {
		t.Fatal("an unknown level was accepted")
	}
	if _, err := (LogConfig{Level: "info", Format: "xml"}).Logger(&buf); err == nil {
		t.Fatal("an unknown format was accepted")
	}
}
