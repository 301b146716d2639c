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
	// shed counts entries the table's limits kept out, by ShedReason
	// (NotShed's slot unused). Every reason's series exists from the start,
	// at 0, so that alerts on it need no absent().
	shed [numShedReasons]prometheus.Counter
}

const (
	resultOK = iota
	resultInvalid
	resultDenied
	resultExhausted
	numResults
)

var resultLabels = [numResults]string{
	resultOK:        "ok",
	resultInvalid:   "invalid",
	resultDenied:    "denied",
	resultExhausted: "exhausted",
}

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
			Help: "Announces received, by event and result (ok, invalid, denied: refused by the certificate checks of mTLS, exhausted: refused by a full table).",
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
		Help: "Blobs in the table, including those whose entries all expired but are not swept yet.",
	}, func() float64 { return float64(t.Blobs()) })
	shed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_tracker_shed_total",
		Help: "New entries the table's limits kept out, by limit (blob_full: answered, not listed; entries: answered, not listed, or refused for a new blob; blobs: refused).",
	}, []string{"reason"})
	for r := NotShed + 1; r < numShedReasons; r++ {
		m.shed[r] = shed.WithLabelValues(r.String())
	}
	for _, c := range []prometheus.Collector{m.announces, m.duration, peers, blobs, shed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
