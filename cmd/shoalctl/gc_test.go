package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// gcOrigin is an origin on the in-memory driver holding two tags of
// app, with a garbage collector that keeps the newest tag, served as the
// origin binary serves them: the registry API and the gc admin handler.
func gcOrigin(t *testing.T) (registry, admin string) {
	t.Helper()
	d := inmemory.New()
	log := slog.New(slog.DiscardHandler)
	srv, err := origin.New(d, origin.DefaultConfig(), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := httptest.NewServer(srv)
	t.Cleanup(reg.Close)
	cfg := gc.DefaultConfig()
	cfg.Interval = 0
	cfg.Rules = []gc.Rule{{Repositories: "app", KeepLast: 1}}
	runner, err := gc.NewRunner(d, cfg, gc.RunnerOptions{Deleter: gc.APIDeleter{Driver: d, API: srv}, Logger: log, LeaseSettle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	adm := httptest.NewServer(gc.NewAdminHandler(runner))
	t.Cleanup(adm.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	for _, tag := range []string{"old", "new"} {
		img, err := random.Image(1024, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(host+"/app:"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
			t.Fatalf("pushing app:%s: %v", tag, err)
		}
		// Tags are ordered by push time, a tie by name: "new" is pushed
		// once the clock has moved past the end of "old"'s push, so that
		// the times and not the names decide.
		pushed := time.Now()
		eventually.True(t, "the clock to move past app:"+tag+"'s push", func() bool { return time.Now().After(pushed) })
	}
	return host, adm.URL
}

func TestGCStartWaitPrintsASummaryAndJSONForScripts(t *testing.T) {
	_, admin := gcOrigin(t)
	var out bytes.Buffer
	if err := run(t.Context(), []string{"--admin", admin, "gc", "start", "--dry-run", "--wait"}, &out); err != nil {
		t.Fatalf("gc start --dry-run --wait: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		"garbage collection started (dry run: nothing is deleted)\n",
		"last garbage collection (dry run: nothing is deleted): finished ",
		"  tags:      would delete 1 (app:old)\n",
		"  manifests: would delete 1\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("gc start --dry-run --wait printed\n%s\nwithout the line %q", text, want)
		}
	}
	if strings.Contains(text, "{") {
		t.Errorf("gc start --wait printed JSON without --json:\n%s", text)
	}

	out.Reset()
	if err := run(t.Context(), []string{"--admin", admin, "gc", "start", "--wait", "--json"}, &out); err != nil {
		t.Fatalf("gc start --wait --json: %v\n%s", err, out.String())
	}
	// Scripts get the admin API's answers: the start's, then the report.
	dec := json.NewDecoder(&out)
	var sts []gc.Status
	for {
		var st gc.Status
		if err := dec.Decode(&st); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("gc start --wait --json printed something that is not JSON: %v", err)
		}
		sts = append(sts, st)
	}
	if len(sts) != 2 || sts[1].Running || sts[1].Last == nil {
		t.Fatalf("gc start --wait --json printed %d statuses, want 2, the last one finished with a report", len(sts))
	}
	if r := sts[1].Last; r.DryRun || len(r.Tags) != 1 || r.Tags[0].Tag != "old" {
		t.Errorf("the report of the real run: dryRun %v, tags %+v; want tag old deleted", r.DryRun, r.Tags)
	}

	out.Reset()
	if err := run(t.Context(), []string{"--admin", admin, "gc", "status"}, &out); err != nil {
		t.Fatal(err)
	}
	if want := "  tags:      deleted 1 (app:old)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("gc status printed\n%s\nwithout the line %q", out.String(), want)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,                     // shoalctl alone
		{"frobnicate"},          // an unknown command
		{"gc"},                  // gc without what to do
		{"gc", "restart"},       // an unknown gc command
		{"gc", "status", "now"}, // a leftover argument
	} {
		err := run(t.Context(), args, io.Discard)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("shoalctl %q: %v, want a usage error (usage printed, exit 2)", args, err)
		}
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"help"}, &out); err != nil || !strings.HasPrefix(out.String(), "usage: shoalctl") {
		t.Errorf("shoalctl help: %v, printed %q; want the usage", err, out.String())
	}
}
