package promscrape

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestScrapeSumsSamplesByLabels(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, `# TYPE bytes_total counter
bytes_total{source="peer",host="a"} 10
bytes_total{source="peer",host="b"} 5
bytes_total{source="origin",host="a"} 2
# TYPE up gauge
up 1
`)
	}))
	defer srv.Close()
	m, err := Scrape(t.Context(), nil, srv.URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"bytes_total", nil, 17},
		{"bytes_total", []string{"source", "peer"}, 15},
		{"bytes_total", []string{"source", "peer", "host", "b"}, 5},
		{"bytes_total", []string{"source", "none"}, 0},
		{"up", nil, 1},
		{"absent_total", nil, 0},
	} {
		if got := m.Sum(c.name, c.labels...); got != c.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, err := Scrape(t.Context(), nil, srv.URL+"/nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("scraping a 404: %v, want an error naming the status", err)
	}
}
