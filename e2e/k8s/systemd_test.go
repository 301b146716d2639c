package k8s

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// systemdAnalyze checks unit files (Debian package systemd).
const systemdAnalyze = "/usr/bin/systemd-analyze"

var execStart = regexp.MustCompile(`(?m)^ExecStart=(/usr/local/bin/([a-z-]+))\s`)

// TestSystemdUnitsVerify runs `systemd-analyze verify` on every unit in
// deploy/systemd, with ExecStart pointing at the binary built from
// cmd/<name>: a misspelt directive, which systemd only warns about and
// ignores, fails the test like an error does.
func TestSystemdUnitsVerify(t *testing.T) {
	root := workspaceRoot(t)
	units, err := filepath.Glob(filepath.Join(root, "deploy/systemd/*.service"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in deploy/systemd (%v)", err)
	}
	if _, err := os.Stat(systemdAnalyze); err != nil {
		testenv.Unavailable(t, "systemd-analyze: %v (Debian package systemd)", err)
	}
	for _, u := range units {
		t.Run(filepath.Base(u), func(t *testing.T) {
			b, err := os.ReadFile(u)
			if err != nil {
				t.Fatal(err)
			}
			m := execStart.FindStringSubmatch(string(b))
			if m == nil {
				t.Fatalf("%s: no ExecStart=/usr/local/bin/<command> line", u)
			}
			bin := testenv.Binary(t, m[2])
			unit := filepath.Join(t.TempDir(), filepath.Base(u))
			if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(b), m[1], bin)), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, systemdAnalyze, "verify", unit).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(u), err, out)
			}
		})
	}
}
