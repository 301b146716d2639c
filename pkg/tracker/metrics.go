package tracker

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the tracker's Prometheus series, registered on the registerer
// the caller passes (no global registry).
type metrics struct {
	announces *prometheus.CounterVec
	duration  prometheus.Histogram
	// counts caches announces' children by event and result, so that an
	// announce does not hash label values. A child is created on first use,
	// as WithLabelValues would, so that /metrics shows the same series.
	counts [numEvents][numResults]atomic.Pointer[prometheus.Counter]
}

const (
	resultOK = iota
	resultInvalid
	numResults
)

var resultLabels = [numResults]string{resultOK: "ok", resultInvalid: "invalid"}

// count returns the announces counter for an event label index and result.
func (m *metrics) count(event, result int) prometheus.Counter {
	if c := m.counts[event][result].Load(); c != nil {
		return *c
	}
	// Concurrent first uses get the same child from WithLabelValues.
	c := m.announces.WithLabelValues(eventLabels[event], resultLabels[result])
	m.counts[event][result].Store(&c)
	return c
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
