package gc

import "github.com/prometheus/client_golang/prometheus"

// metrics are the shoal_gc_* series. They are registered on the registerer
// the origin passes in, never on the global default one.
type metrics struct {
	runs        *prometheus.CounterVec
	duration    prometheus.Histogram
	running     prometheus.Gauge
	lastSuccess prometheus.Gauge
	blobs       *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	manifests   *prometheus.CounterVec
	tags        *prometheus.CounterVec
	uploads     *prometheus.CounterVec
	spared      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	mode := []string{"mode"} // "delete" or "dry_run"
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_gc_runs_total", Help: "GC runs by result (ok, error, lease_held, lease_lost, canceled).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shoal_gc_run_duration_seconds", Help: "Wall time of GC runs that held the lease.",
			Buckets: prometheus.ExponentialBuckets(0.1, 4, 10),
		}),
		running:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_gc_running", Help: "1 while this node runs GC."}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_gc_last_success_timestamp_seconds", Help: "End of this node's last successful run."}),
		blobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_gc_blobs_deleted_total", Help: "Blobs deleted (or that a dry run would delete).",
		}, mode),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_gc_bytes_freed_total", Help: "Bytes of blob data deleted (or that a dry run would delete).",
		}, mode),
		manifests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_gc_manifests_deleted_total", Help: "Manifest revisions deleted by retention.",
		}, mode),
		tags: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_gc_tags_deleted_total", Help: "Tags deleted by retention.",
		}, mode),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_gc_uploads_purged_total", Help: "Abandoned upload sessions purged.",
		}, mode),
		spared: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_gc_blobs_spared_total", Help: "Sweep candidates the re-check before deletion found in use.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.runs, m.duration, m.running, m.lastSuccess, m.blobs, m.bytes, m.manifests, m.tags, m.uploads, m.spared)
	}
	return m
}

func (m *metrics) record(r *Report) {
	mode := "delete"
	if r.DryRun {
		mode = "dry_run"
	}
	m.blobs.WithLabelValues(mode).Add(float64(len(r.Blobs)))
	m.bytes.WithLabelValues(mode).Add(float64(r.BytesFreed))
	m.manifests.WithLabelValues(mode).Add(float64(len(r.Manifests)))
	m.tags.WithLabelValues(mode).Add(float64(len(r.Tags)))
	m.uploads.WithLabelValues(mode).Add(float64(len(r.Uploads)))
	m.spared.Add(float64(len(r.BlobsSpared)))
}
