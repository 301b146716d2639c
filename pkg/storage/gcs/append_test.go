package gcs

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	shoalstorage "github.com/shoal-dev/shoal/pkg/storage"
)

// TestAppendTemporaryGoesWithItsDirectory: an append's temporary object,
// which a process killed between its upload and the compose leaves
// behind, sits beside the file it continues, hidden from List and Walk,
// and goes when the directory is deleted (as GC's purge deletes an
// abandoned upload session), so nothing of it stays in the bucket.
func TestAppendTemporaryGoesWithItsDirectory(t *testing.T) {
	u, err := url.Parse(store.FreshURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PutContent(ctx, "/up/id/parts/a", []byte("committed")); err != nil {
		t.Fatal(err)
	}
	// What a process killed after uploading the appended bytes and
	// before composing them leaves: the temporary, named as Writer names it.
	client, err := storage.NewClient(ctx, option.WithEndpoint(cfg.Endpoint+"/storage/v1/"), option.WithoutAuthentication(), storage.WithJSONReads())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	bucket := client.Bucket(cfg.Bucket)
	tmp := cfg.Prefix + "/up/id/parts/a" + appendSuffix + "0123456789ab"
	w := bucket.Object(tmp).NewWriter(ctx)
	if _, err := w.Write([]byte("cut short")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	if got, err := d.List(ctx, "/up/id/parts"); err != nil || strings.Join(got, ",") != "/up/id/parts/a" {
		t.Errorf("List of the part's directory = %v, %v; want only /up/id/parts/a", got, err)
	}
	var walked []string
	if err := d.Walk(ctx, "/up", func(fi shoalstorage.FileInfo) error {
		walked = append(walked, fi.Path())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range walked {
		if strings.Contains(p, "~") {
			t.Errorf("Walk showed the append temporary %s", p)
		}
	}

	if err := d.Delete(ctx, "/up/id"); err != nil {
		t.Fatal(err)
	}
	it := bucket.Objects(ctx, &storage.Query{Prefix: cfg.Prefix + "/up/"})
	for {
		o, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Errorf("after deleting /up/id the bucket still holds %s", o.Name)
	}
}
