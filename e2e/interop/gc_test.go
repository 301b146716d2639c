package interop

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/gc"
)

// TestRetentionThroughAdminCLI drives retention and mark-and-sweep on a
// running origin with shoalctl: a dry run reports and deletes nothing, a
// real run deletes exactly the tags the rule names and frees their blobs,
// and what is kept still pulls.
func TestRetentionThroughAdminCLI(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "origin.yaml")
	cfg := "gc:\n  interval: 0s\n  rules:\n    - repositories: \"ret/**\"\n      keepLast: 1\n      keepTags: [\"release-.*\"]\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	admin, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	o := testenv.Origin(t, "file://"+dir, "--config", cfgPath, "--admin-listen", admin)
	ctl := testenv.Binary(t, "shoalctl")

	// Four tags, each its own image; push times are set below.
	tags := []string{"old", "release-1", "middle", "new"}
	digests := map[string]string{}
	for _, tag := range tags {
		img, err := random.Image(64<<10, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := crane.Push(img, o.Addr+"/ret/app:"+tag, craneOpts(t)...); err != nil {
			t.Fatalf("pushing %s: %v", tag, err)
		}
		digests[tag] = mustDigest(t, img)
	}
	// Age everything past the GC grace period, and order the tags' push
	// times: old < release-1 < middle < new.
	base := time.Now().Add(-10 * time.Hour)
	err = filepath.WalkDir(filepath.Join(dir, "docker"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		at := base
		for i, tag := range tags {
			if strings.Contains(p, "/_manifests/tags/"+tag+"/") {
				at = base.Add(time.Duration(i+1) * time.Hour)
			}
		}
		return os.Chtimes(p, at, at)
	})
	if err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) gc.Status {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), ctl, append(append([]string{"--admin", "http://" + admin}, args...), "--json")...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("shoalctl %v: %v\n%s", args, err, out)
		}
		// --wait --json prints the POST answer, then the final status.
		dec := json.NewDecoder(strings.NewReader(string(out)))
		var st gc.Status
		for dec.More() {
			if err := dec.Decode(&st); err != nil {
				t.Fatalf("shoalctl %v printed %q: %v", args, out, err)
			}
		}
		return st
	}
	deletedTags := func(st gc.Status) []string {
		if st.Last == nil {
			t.Fatal("no report after the run")
		}
		if st.Last.Error != "" {
			t.Fatalf("run failed: %s", st.Last.Error)
		}
		var out []string
		for _, td := range st.Last.Tags {
			out = append(out, td.Tag)
		}
		return out
	}

	st := run("gc", "start", "--dry-run", "--wait")
	if got := strings.Join(deletedTags(st), ","); got != "middle,old" && got != "old,middle" {
		t.Fatalf("dry run would delete tags %q, want old and middle", got)
	}
	if !st.Last.DryRun || len(st.Last.Blobs) == 0 {
		t.Fatalf("dry run report: dryRun=%v, %d blobs", st.Last.DryRun, len(st.Last.Blobs))
	}
	if _, err := crane.Digest(o.Addr+"/ret/app:old", craneOpts(t)...); err != nil {
		t.Fatalf("a dry run deleted tag old: %v", err)
	}

	st = run("gc", "start", "--wait")
	if got := strings.Join(deletedTags(st), ","); got != "middle,old" && got != "old,middle" {
		t.Fatalf("run deleted tags %q, want old and middle", got)
	}
	if st.Last.BytesFreed <= 0 || len(st.Last.Blobs) == 0 {
		t.Fatalf("run freed %d bytes in %d blobs; the deleted images' layers should have gone", st.Last.BytesFreed, len(st.Last.Blobs))
	}
	for _, tag := range []string{"old", "middle"} {
		resp, err := http.Get(o.URL() + "/v2/ret/app/manifests/" + tag)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("deleted tag %s answers %s", tag, resp.Status)
		}
	}
	for _, tag := range []string{"release-1", "new"} {
		ref := o.Addr + "/ret/app:" + tag
		img, err := crane.Pull(ref, craneOpts(t)...)
		if err != nil {
			t.Fatalf("kept tag %s: %v", tag, err)
		}
		checkBlobs(t, o.Addr, "ret/app@"+digests[tag], img)
		if got := mustDigest(t, img); got != digests[tag] {
			t.Errorf("kept tag %s resolves to %s, pushed %s", tag, got, digests[tag])
		}
	}
}
