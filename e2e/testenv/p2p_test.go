package testenv

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestMetricsSumAddsMatchingSamplesOnly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# TYPE shoal_agent_downloaded_bytes_total counter
shoal_agent_downloaded_bytes_total{source="peer"} 300
shoal_agent_downloaded_bytes_total{source="origin"} 100
# TYPE shoal_origin_http_response_bytes_total counter
shoal_origin_http_response_bytes_total{handler="blob",code="200"} 7
shoal_origin_http_response_bytes_total{handler="manifest",code="200"} 5
# TYPE shoal_origin_cluster_members gauge
shoal_origin_cluster_members 2
`)
	}))
	defer srv.Close()
	m, err := ScrapeMetrics(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"shoal_agent_downloaded_bytes_total", nil, 400},
		{"shoal_agent_downloaded_bytes_total", []string{"source", "peer"}, 300},
		{"shoal_origin_http_response_bytes_total", []string{"handler", "blob"}, 7},
		{"shoal_origin_cluster_members", nil, 2},
		{"shoal_not_there_total", nil, 0},
		{"shoal_agent_downloaded_bytes_total", []string{"source", "nowhere"}, 0},
	} {
		if got := m.Sum(c.name, c.labels...); got != c.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

func TestUnescapeMountUndoesMountinfoOctalEscapes(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/plain`:              "/tmp/plain",
		`/tmp/with\040space`:      "/tmp/with space",
		`/tmp/tab\011and\134back`: "/tmp/tab\tand\\back",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
