package storage

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the storage metrics that Instrument records into.
type Metrics struct {
	duration *prometheus.HistogramVec
}

// NewMetrics creates the storage metrics and registers them with reg, or
// with nothing if reg is nil. If reg already holds them (two components of
// one process instrumenting their drivers), the registered ones are shared.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "shoal_storage_operation_duration_seconds",
		Help: "Time a storage driver operation took, by driver, operation and outcome (ok, not_found, error). " +
			"Reader and writer are timed until the stream is open; commit is timed on its own.",
		// From 100µs (a local stat) to about 26s (a slow HDFS call).
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 19),
	}, []string{"driver", "operation", "outcome"})
	if reg != nil {
		if err := reg.Register(duration); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				panic(err) // a conflicting metric of the same name: a programming error
			}
			duration = already.ExistingCollector.(*prometheus.HistogramVec)
		}
	}
	return &Metrics{duration: duration}
}

// Instrument returns d with the latency of each operation recorded in m.
// Errors pass through unchanged, so callers can still test their types.
func Instrument(d Driver, m *Metrics) Driver {
	return &instrumented{Driver: d, m: m, driver: d.Name()}
}

type instrumented struct {
	Driver
	m      *Metrics
	driver string
}

func outcome(err error) string {
	var notFound PathNotFoundError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &notFound):
		return "not_found"
	default:
		return "error"
	}
}

func (m *Metrics) observe(driver, op string, start time.Time, err error) {
	m.duration.WithLabelValues(driver, op, outcome(err)).Observe(time.Since(start).Seconds())
}

func (i *instrumented) GetContent(ctx context.Context, path string) ([]byte, error) {
	start := time.Now()
	b, err := i.Driver.GetContent(ctx, path)
	i.m.observe(i.driver, "get_content", start, err)
	return b, err
}

func (i *instrumented) PutContent(ctx context.Context, path string, content []byte) error {
	start := time.Now()
	err := i.Driver.PutContent(ctx, path, content)
	i.m.observe(i.driver, "put_content", start, err)
	return err
}

func (i *instrumented) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	start := time.Now()
	r, err := i.Driver.Reader(ctx, path, offset)
	i.m.observe(i.driver, "reader", start, err)
	return r, err
}

func (i *instrumented) Writer(ctx context.Context, path string, append bool) (FileWriter, error) {
	start := time.Now()
	w, err := i.Driver.Writer(ctx, path, append)
	i.m.observe(i.driver, "writer", start, err)
	if err != nil {
		return nil, err
	}
	return &instrumentedWriter{FileWriter: w, i: i}, nil
}

func (i *instrumented) Stat(ctx context.Context, path string) (FileInfo, error) {
	start := time.Now()
	fi, err := i.Driver.Stat(ctx, path)
	i.m.observe(i.driver, "stat", start, err)
	return fi, err
}

func (i *instrumented) List(ctx context.Context, path string) ([]string, error) {
	start := time.Now()
	keys, err := i.Driver.List(ctx, path)
	i.m.observe(i.driver, "list", start, err)
	return keys, err
}

func (i *instrumented) Move(ctx context.Context, sourcePath, destPath string) error {
	start := time.Now()
	err := i.Driver.Move(ctx, sourcePath, destPath)
	i.m.observe(i.driver, "move", start, err)
	return err
}

func (i *instrumented) Delete(ctx context.Context, path string) error {
	start := time.Now()
	err := i.Driver.Delete(ctx, path)
	i.m.observe(i.driver, "delete", start, err)
	return err
}

func (i *instrumented) RedirectURL(r *http.Request, path string) (string, error) {
	start := time.Now()
	u, err := i.Driver.RedirectURL(r, path)
	i.m.observe(i.driver, "redirect_url", start, err)
	return u, err
}

// Walk is timed as a whole, including the time f takes.
func (i *instrumented) Walk(ctx context.Context, path string, f WalkFn, options ...func(*WalkOptions)) error {
	start := time.Now()
	err := i.Driver.Walk(ctx, path, f, options...)
	i.m.observe(i.driver, "walk", start, err)
	return err
}

type instrumentedWriter struct {
	FileWriter
	i *instrumented
}

func (w *instrumentedWriter) Commit(ctx context.Context) error {
	start := time.Now()
	err := w.FileWriter.Commit(ctx)
	w.i.m.observe(w.i.driver, "commit", start, err)
	return err
}

// instrumentedStaged times the opening and the commit of staged writes as
// Writer's.
type instrumentedStaged struct {
	sw StagedWriter
	i  *instrumented
}

func (s instrumentedStaged) StagedWriter(ctx context.Context, path, stage string) (FileWriter, error) {
	start := time.Now()
	w, err := s.sw.StagedWriter(ctx, path, stage)
	s.i.m.observe(s.i.driver, "writer", start, err)
	if err != nil {
		return nil, err
	}
	return &instrumentedWriter{FileWriter: w, i: s.i}, nil
}
