package tracker

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the tracker's Prometheus series, registered on the registerer
// the caller passes (no global registry).
type metrics struct {
	announces *prometheus.CounterVec
	duration  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, t *Table) (*metrics, error) {
	m := &metrics{
		announces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_announces_total",
			Help: "Announces received, by event and result (ok, invalid).",
		}, []string{"event", "result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shoal_tracker_announce_duration_seconds",
			Help: "Time to handle an announce, from request decoded to response built.",
			// An announce is a map update and a sort of a few dozen
			// entries: microseconds, unless the shard lock is contended.
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 8),
		}),
	}
	peers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shoal_tracker_peers",
		Help: "(peer, blob) entries in the table, including expired ones not yet swept.",
	}, func() float64 { return float64(t.Len()) })
	blobs := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shoal_tracker_blobs",
		Help: "Blobs with at least one entry in the table.",
	}, func() float64 { return float64(t.Blobs()) })
	for _, c := range []prometheus.Collector{m.announces, m.duration, peers, blobs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
