package mirror

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	responseBytes *prometheus.CounterVec
	manifestCache *prometheus.CounterVec
	blobCache     *prometheus.CounterVec
	sentBytes     *prometheus.CounterVec
	originBytes   prometheus.Counter
	prefetches    *prometheus.CounterVec
}

// cacheSizer is a cache whose size the metrics report.
type cacheSizer interface {
	Len() int
	Bytes() int64
}

// cacheCollector reports the mirror's in-memory caches when scraped.
type cacheCollector struct {
	caches         map[string]cacheSizer
	entries, bytes *prometheus.Desc
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.bytes
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	for name, cache := range c.caches {
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(cache.Len()), name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(cache.Bytes()), name)
	}
}

// newMetrics returns the mirror's metrics, registered with reg when not
// nil, caches among them by the name they are reported under.
func newMetrics(reg prometheus.Registerer, caches map[string]cacheSizer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_http_requests_total",
			Help: "Mirror requests by route (ping, manifest, blob, tags, upload, other), method and status code.",
		}, []string{"handler", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_agent_http_request_duration_seconds",
			Help:    "Mirror request duration, to the end of the body.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"handler", "method"}),
		responseBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_http_response_bytes_total",
			Help: "Body bytes the mirror sent to clients, by route.",
		}, []string{"handler"}),
		manifestCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_manifest_cache_requests_total",
			Help: "Manifest requests answered from memory (hit), by asking the origin (miss), or with a tag's last answer while the origin is down (stale).",
		}, []string{"result"}),
		blobCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_blob_cache_requests_total",
			Help: "Blob GETs served from a complete cached blob (hit), through a download (miss), or proxied from the origin without P2P (origin).",
		}, []string{"result"}),
		sentBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_blob_sent_bytes_total",
			Help: "Blob bytes sent to clients from the P2P engine: handed to the connection as a file region, sendfile(2) (file), or copied through a buffer (buffer: a blob still downloading, or a TLS client).",
		}, []string{"how"}),
		originBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_origin_proxy_bytes_total",
			Help: "Blob bytes proxied from the origin's registry API without P2P (only when no P2P engine is configured).",
		}),
		prefetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_prefetches_total",
			Help: "Prefetch requests (shoalctl preheat --agents) by result: fetched into the piece store, cached (complete before), failed, invalid.",
		}, []string{"result"}),
	}
	cc := &cacheCollector{
		caches: caches,
		entries: prometheus.NewDesc("shoal_agent_mirror_cache_entries",
			"Entries in the mirror's in-memory caches: tags (manifests by tag and tag lists, tagTTL), manifests (by digest), auth (the origin's yeses, authTTL), capabilities (the P2P capabilities that came with them), present (the digests the origin placed in a repository, offlineTTL), offline_tags and offline_auth (kept offlineTTL for while the origin is down).",
			[]string{"cache"}, nil),
		bytes: prometheus.NewDesc("shoal_agent_mirror_cache_bytes",
			"Bytes held by the mirror's in-memory caches (keys, bodies and headers, and a fixed overhead per entry), by cache as in shoal_agent_mirror_cache_entries.",
			[]string{"cache"}, nil),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.responseBytes, m.manifestCache, m.blobCache, m.sentBytes, m.originBytes, m.prefetches, cc)
	}
	return m
}

func (m *metrics) observe(handler, method string, status int, bytes int64, d time.Duration) {
	m.requests.WithLabelValues(handler, method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(handler, method).Observe(d.Seconds())
	m.responseBytes.WithLabelValues(handler).Add(float64(bytes))
}
