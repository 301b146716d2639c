package auth

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	decisions *prometheus.CounterVec
	// decided holds the decisions counters of the four actions, resolved
	// once: a label lookup per request costs more than the decision.
	decided        map[Action][2]prometheus.Counter // [deny, allow]
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
	m.decided = make(map[Action][2]prometheus.Counter)
	for _, a := range []Action{Pull, Push, Delete, Admin} {
		m.decided[a] = [2]prometheus.Counter{m.decisions.WithLabelValues(string(a), "deny"), m.decisions.WithLabelValues(string(a), "allow")}
	}
	if reg != nil {
		reg.MustRegister(m.decisions, m.tokensIssued, m.badCredentials)
	}
	return m
}

// decision counts one decision.
func (m *metrics) decision(action Action, allowed bool) {
	c, ok := m.decided[action]
	if !ok {
		result := "deny"
		if allowed {
			result = "allow"
		}
		m.decisions.WithLabelValues(string(action), result).Inc()
		return
	}
	if allowed {
		c[1].Inc()
	} else {
		c[0].Inc()
	}
}
