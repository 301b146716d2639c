package auth

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	decisions      *prometheus.CounterVec
	tokensIssued   prometheus.Counter
	badCredentials *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_auth_decisions_total",
			Help: "Access decisions by action and result (allow, deny).",
		}, []string{"action", "result"}),
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_auth_tokens_issued_total",
			Help: "Bearer tokens issued by the token endpoint (access and refresh).",
		}),
		badCredentials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_auth_bad_credentials_total",
			Help: "Requests refused for bad credentials, by kind (basic, bearer, scheme, refresh).",
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.decisions, m.tokensIssued, m.badCredentials)
	}
	return m
}
