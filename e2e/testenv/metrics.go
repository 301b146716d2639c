package testenv

import (
	"context"
	"time"

	"github.com/shoal-dev/shoal/internal/promscrape"
)

// Metrics is one scrape of a Prometheus /metrics endpoint; Sum adds up
// its samples by labels.
type Metrics = promscrape.Metrics

// ScrapeMetrics fetches and parses url (http://host:port/metrics), within
// 10 seconds.
func ScrapeMetrics(ctx context.Context, url string) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return promscrape.Scrape(ctx, nil, url)
}
