package gc

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/internal/eventually"
)

func TestAdminHandler(t *testing.T) {
	drv := newAged(48 * time.Hour)
	f := buildSweepFixture(t, drv)
	reg := prometheus.NewRegistry()
	r, err := NewRunner(drv, testConfig(), RunnerOptions{Holder: "admin", LeaseSettle: time.Millisecond, Logger: discard(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewAdminHandler(r))
	defer srv.Close()

	do := func(method, query string) (int, Status) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+"/admin/v1/gc"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st Status
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return resp.StatusCode, st
	}
	waitIdle := func() Status {
		t.Helper()
		var code int
		var st Status
		if err := eventually.Wait(eventually.Timeout, func() bool {
			code, st = do(http.MethodGet, "")
			return code == http.StatusOK && !st.Running && st.Last != nil
		}); err != nil {
			t.Fatalf("waiting for the gc run to finish: %v; last GET answered %d %+v", err, code, st)
		}
		return st
	}

	if code, st := do(http.MethodGet, ""); code != http.StatusOK || st.Running || st.Last != nil {
		t.Fatalf("GET before any run: %d %+v", code, st)
	}
	if code, _ := do(http.MethodPost, "?dryRun=maybe"); code != http.StatusBadRequest {
		t.Errorf("POST ?dryRun=maybe: %d, want 400", code)
	}
	if code, _ := do(http.MethodPut, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d, want 405", code)
	}
	if code, _ := do(http.MethodPost, "?dryRun=true"); code != http.StatusAccepted {
		t.Fatalf("POST ?dryRun=true: %d, want 202", code)
	}
	st := waitIdle()
	if !st.Last.DryRun || len(st.Last.Blobs) != len(f.swept) {
		t.Errorf("dry run report: dryRun=%v, %d blobs, want %d", st.Last.DryRun, len(st.Last.Blobs), len(f.swept))
	}
	if after := blobsIn(t, drv); !after[f.swept[0]] {
		t.Errorf("dry run through the admin API deleted a blob")
	}

	if code, _ := do(http.MethodPost, ""); code != http.StatusAccepted {
		t.Fatalf("POST: %d, want 202", code)
	}
	// A second start while the first runs is refused (or the first was
	// already done, in which case it is accepted).
	if code, _ := do(http.MethodPost, ""); code != http.StatusConflict && code != http.StatusAccepted {
		t.Errorf("second POST: %d, want 409 or 202", code)
	}
	st = waitIdle()
	if st.Last.DryRun || st.Last.Error != "" {
		t.Errorf("run report: %+v", st.Last)
	}
	if after := blobsIn(t, drv); after[f.swept[0]] {
		t.Errorf("run through the admin API did not delete")
	}
	if n := testutil.ToFloat64(r.metrics.runs.WithLabelValues("ok")); n < 2 {
		t.Errorf("shoal_gc_runs_total{result=ok} = %v, want at least 2", n)
	}
	if n := testutil.ToFloat64(r.metrics.blobs.WithLabelValues("delete")); n != float64(len(f.swept)) {
		t.Errorf("shoal_gc_blobs_deleted_total{mode=delete} = %v, want %d", n, len(f.swept))
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "shoal_gc_") {
			t.Errorf("metric %s lacks the shoal_gc_ prefix", mf.GetName())
		}
	}
}

func TestScheduleRunsPeriodically(t *testing.T) {
	drv := newAged(48 * time.Hour)
	buildSweepFixture(t, drv)
	cfg := testConfig()
	cfg.Interval = Duration(20 * time.Millisecond)
	r, err := NewRunner(drv, cfg, RunnerOptions{Holder: "s", LeaseSettle: time.Millisecond, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Schedule(ctx); close(done) }()
	err = eventually.Wait(eventually.Timeout, func() bool { return r.Status().Last != nil })
	cancel()
	<-done
	if err != nil {
		t.Fatalf("waiting for a scheduled run with a 20ms interval: %v; status %+v", err, r.Status())
	}
}

func TestCancelStopsARun(t *testing.T) {
	drv := newAged(48 * time.Hour)
	buildSweepFixture(t, drv)
	var r *Runner
	hd := &hookDriver{agedDriver: drv, match: func(op, p string) bool {
		return op == "put" && strings.HasPrefix(p, pendingRoot)
	}, hook: func() { r.Cancel() }}
	r, err := NewRunner(hd, testConfig(), RunnerOptions{Holder: "c", LeaseSettle: time.Millisecond, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Run(context.Background(), RunOptions{})
	if err == nil || len(rep.Blobs) != 0 {
		t.Fatalf("canceled run: err %v, deleted %d blobs", err, len(rep.Blobs))
	}
	if m := pendingSetsIn(t, drv); len(m) > 0 {
		t.Errorf("canceled run left its pending set: %v", m)
	}
	if rec, _, _ := ReadLease(context.Background(), drv); time.Now().Before(rec.Expires) {
		t.Errorf("canceled run did not release its lease: %+v", rec)
	}
}
