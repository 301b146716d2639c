package origin

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytesOut *prometheus.CounterVec
	bytesIn  *prometheus.CounterVec
	// authDenied counts requests access control refused.
	authDenied *prometheus.CounterVec
	// bodyTimeouts counts request bodies cut by the progress deadline.
	bodyTimeouts *prometheus.CounterVec
	// uploadConflicts counts chunks refused because another request was
	// writing to the same session.
	uploadConflicts prometheus.Counter
	// limitRefusals counts requests refused by a configured limit.
	limitRefusals *prometheus.CounterVec
	// storageUp is 0 while the storage breaker is open.
	storageUp prometheus.Gauge
	// storageRefusals counts storage calls failed without trying while
	// storage was out.
	storageRefusals prometheus.Counter
	// storageTimeouts counts storage calls given up after storageTimeout.
	storageTimeouts *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_http_requests_total",
			Help: "Registry API requests by handler, method and status code.",
		}, []string{"handler", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_origin_http_request_duration_seconds",
			Help:    "Registry API request latency by handler and method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"handler", "method"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_http_response_bytes_total",
			Help: "Body bytes sent, by handler.",
		}, []string{"handler"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_http_request_bytes_total",
			Help: "Body bytes received for uploads and manifests, by handler.",
		}, []string{"handler"}),
		authDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_auth_denied_total",
			Help: "Registry API requests refused by access control, by action (pull, push, delete, login, catalog) and reason (anonymous, bad_credentials, insufficient_scope, forbidden).",
		}, []string{"action", "reason"}),
		bodyTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_body_timeouts_total",
			Help: "Request bodies cut because the client sent nothing for bodyTimeout, by handler (upload, uploads, manifest, other: the token endpoint and the rest beside the API).",
		}, []string{"handler"}),
		uploadConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_upload_conflicts_total",
			Help: "Upload chunks refused (416) because another request was writing to the same session on this node.",
		}),
		limitRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_limit_refusals_total",
			Help: "Requests refused by a limit of the registry config, by limit (manifest_size, manifest_references, manifest_validations, blob_size, upload_sessions).",
		}, []string{"limit"}),
		storageUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_origin_storage_up",
			Help: "1 while storage answers, 0 while the origin fails its calls fast after an outage.",
		}),
		storageRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_storage_refusals_total",
			Help: "Storage calls failed at once, without trying, while storage was out (each a 503 to a request).",
		}),
		storageTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_storage_timeouts_total",
			Help: "Storage calls given up after storageTimeout, by operation.",
		}, []string{"operation"}),
	}
	m.storageUp.Set(1)
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.bytesOut, m.bytesIn, m.authDenied, m.bodyTimeouts, m.uploadConflicts,
			m.limitRefusals, m.storageUp, m.storageRefusals, m.storageTimeouts)
	}
	return m
}

// The limit label of shoal_origin_limit_refusals_total.
const (
	limitManifestSize        = "manifest_size"
	limitManifestReferences  = "manifest_references"
	limitManifestValidations = "manifest_validations"
	limitBlobSize            = "blob_size"
	limitUploadSessions      = "upload_sessions"
)

func (m *metrics) observe(handler, method string, status int, d time.Duration) {
	m.requests.WithLabelValues(handler, method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(handler, method).Observe(d.Seconds())
}
