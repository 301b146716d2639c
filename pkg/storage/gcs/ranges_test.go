package gcs

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"cloud.google.com/go/storage"
	"google.golang.org/api/option"

	shoalstorage "github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore/objectstoretest"
)

// TestRangeOpener checks the ranged reads of large objects against
// fake-gcs-server: ranges, sizes, generations, and pinning
// (ifGenerationMatch), on the driver New wraps.
func TestRangeOpener(t *testing.T) {
	u, err := url.Parse(store.FreshURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseURL(u)
	if err != nil || cfg.Endpoint == "" {
		t.Fatalf("ParseURL(%s) = %+v, %v; want an endpoint", u, cfg, err)
	}
	client, err := storage.NewClient(context.Background(), storage.WithJSONReads(), option.WithoutAuthentication(),
		option.WithEndpoint(strings.TrimRight(cfg.Endpoint, "/")+"/storage/v1/"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	d := &driver{bucket: client.Bucket(cfg.Bucket), prefix: cfg.Prefix + "/", chunkSize: 1 << 20}
	objectstoretest.RangeOpener(t, d, d)
}

// TestLargeReads reads objects of several ranges through Reader.
func TestLargeReads(t *testing.T) {
	objectstoretest.LargeReads(t, store.FreshURL(t), func(_ context.Context, u *url.URL) (shoalstorage.Driver, error) {
		return newDriverAt(t, u.String()), nil
	})
}
