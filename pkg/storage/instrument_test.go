package storage_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

const metricName = "shoal_storage_operation_duration_seconds"

// observations returns how many operations were recorded under the labels.
func observations(t *testing.T, reg *prometheus.Registry, op, outcome string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() != metricName {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["driver"] == "inmemory" && labels["operation"] == op && labels["outcome"] == outcome {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

func TestInstrumentRecordsEveryOperationWithItsOutcome(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	d := storage.Instrument(inmemory.New(), storage.NewMetrics(reg))

	if d.Name() != "inmemory" {
		t.Errorf("Name() = %q, want the wrapped driver's name", d.Name())
	}
	if err := d.PutContent(ctx, "/a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetContent(ctx, "/a"); err != nil {
		t.Fatal(err)
	}
	_, err := d.GetContent(ctx, "/missing")
	var notFound storage.PathNotFoundError
	if !errors.As(err, &notFound) {
		t.Errorf("GetContent of a missing file through the wrapper: %v, want the driver's PathNotFoundError", err)
	}
	if _, err := d.Reader(ctx, "/a", 5); err == nil {
		t.Error("Reader past the end succeeded, want InvalidOffsetError")
	}
	w, err := d.Writer(ctx, "/b", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err == nil {
		t.Error("second Commit succeeded, want an error")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "/b"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.List(ctx, "/"); err != nil {
		t.Fatal(err)
	}
	if err := d.Move(ctx, "/b", "/c"); err != nil {
		t.Fatal(err)
	}
	if err := d.Walk(ctx, "/", func(storage.FileInfo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RedirectURL(httptest.NewRequest("GET", "/c", nil), "/c"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "/c"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "/c"); err == nil {
		t.Error("second Delete succeeded, want PathNotFoundError")
	}

	for _, want := range []struct {
		op, outcome string
		count       uint64
	}{
		{"put_content", "ok", 1},
		{"get_content", "ok", 1},
		{"get_content", "not_found", 1},
		{"reader", "error", 1},
		{"writer", "ok", 1},
		{"commit", "ok", 1},
		{"commit", "error", 1},
		{"stat", "ok", 1},
		{"list", "ok", 1},
		{"move", "ok", 1},
		{"walk", "ok", 1},
		{"redirect_url", "ok", 1},
		{"delete", "ok", 1},
		{"delete", "not_found", 1},
	} {
		if got := observations(t, reg, want.op, want.outcome); got != want.count {
			t.Errorf("%s{operation=%q,outcome=%q} has %d observations, want %d", metricName, want.op, want.outcome, got, want.count)
		}
	}

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
}

func TestNewMetricsSharesAlreadyRegisteredMetrics(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	a := storage.Instrument(inmemory.New(), storage.NewMetrics(reg))
	b := storage.Instrument(inmemory.New(), storage.NewMetrics(reg))
	if err := a.PutContent(ctx, "/x", nil); err != nil {
		t.Fatal(err)
	}
	if err := b.PutContent(ctx, "/x", nil); err != nil {
		t.Fatal(err)
	}
	if got := observations(t, reg, "put_content", "ok"); got != 2 {
		t.Errorf("two drivers instrumented with metrics from one registry recorded %d puts, want 2", got)
	}
}
