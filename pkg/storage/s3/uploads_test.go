package s3

import (
	"context"
	"errors"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/service/s3"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// TestDeleteAbortsOpenMultipartUploads: a writer closed without Commit (or
// left by a process that died) is an open multipart upload, which no
// listing shows. Deleting a directory aborts those under it, a directory
// that holds nothing else included, and leaves those of a sibling whose
// name merely starts the same ("/a" does not hold "/ab").
func TestDeleteAbortsOpenMultipartUploads(t *testing.T) {
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
	// The test's own view of the bucket, with the driver's region default.
	cfg.Region = "us-east-1"
	client, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	inner := &driver{client: client, bucket: cfg.Bucket, prefix: cfg.Prefix}

	if err := d.PutContent(ctx, "/up/id1/startedat", []byte("now")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/up/id1/parts/a", "/up/id1/parts/b", "/up/id2/parts/a", "/up/id10/parts/a"} {
		w, err := d.Writer(ctx, p, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("cut short")); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil { // no Commit: the upload stays open
			t.Fatal(err)
		}
	}
	if got := openUploads(t, inner); len(got) != 4 {
		t.Fatalf("open multipart uploads before any Delete: %v, want the 4 writers'", got)
	}

	if err := d.Delete(ctx, "/up/id1"); err != nil {
		t.Fatalf("Delete of a directory with a file and open uploads: %v", err)
	}
	if got, want := openUploads(t, inner), []string{"up/id10/parts/a", "up/id2/parts/a"}; !equal(got, want) {
		t.Errorf("open uploads after deleting /up/id1: %v, want %v", got, want)
	}
	if _, err := d.Stat(ctx, "/up/id1/startedat"); !errors.As(err, new(storage.PathNotFoundError)) {
		t.Errorf("Stat of a file under the deleted directory: %v, want PathNotFoundError", err)
	}

	// Only open uploads under the path: found, and emptied.
	if err := d.Delete(ctx, "/up/id2"); err != nil {
		t.Fatalf("Delete of a directory holding only an open upload: %v", err)
	}
	if got, want := openUploads(t, inner), []string{"up/id10/parts/a"}; !equal(got, want) {
		t.Errorf("open uploads after deleting /up/id2: %v, want %v", got, want)
	}
	if err := d.Delete(ctx, "/up/id2"); !errors.As(err, new(storage.PathNotFoundError)) {
		t.Errorf("a second Delete of /up/id2: %v, want PathNotFoundError", err)
	}
}

// openUploads lists the keys of the multipart uploads open under the
// driver's prefix, relative to it, sorted.
func openUploads(t *testing.T, d *driver) []string {
	t.Helper()
	prefix := d.key("/")
	out, err := d.client.ListMultipartUploads(&s3.ListMultipartUploadsInput{Bucket: aws.String(d.bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, strings.TrimPrefix(strings.TrimPrefix(aws.StringValue(u.Key), prefix), "/"))
	}
	sort.Strings(keys)
	return keys
}

func equal(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}
