package configdoc

import (
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/checkout"
	"github.com/shoal-dev/shoal/internal/daemon"
)

func TestRenderTakesKeysDefaultsAndDocsFromTheCode(t *testing.T) {
	root, err := checkout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	cfg := struct {
		Log daemon.LogConfig `yaml:"log"`
	}{daemon.LogConfig{Level: "info", Format: "text"}}
	out, err := Render(root, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| `log` | section |  | LogConfig selects the log level",
		"| `log.level` | string | `info` | Level is the lowest level logged: debug, info, warn or error. |",
		"| `log.format` | string | `text` | Format is text",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rendering lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderRefusesUndocumentedKeys(t *testing.T) {
	root, err := checkout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	cfg := struct {
		Plain string `yaml:"plain"`
	}{}
	if _, err := Render(root, cfg, Options{}); err == nil || !strings.Contains(err.Error(), "plain") {
		t.Fatalf("Render of a field without a doc comment = %v, want an error naming it", err)
	}
}

func TestFormatting(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0", 10 * time.Second: "10s", 5 * time.Minute: "5m",
		90 * time.Second: "1m30s", 24 * time.Hour: "24h", 30 * time.Hour: "30h", 500 * time.Millisecond: "500ms"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 20 << 30: "20GiB", 1536: "1536", 3 << 20: "3MiB"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
