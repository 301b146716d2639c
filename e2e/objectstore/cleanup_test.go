package objectstore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/storage/drivers"
)

// TestAbandonedUploadLeavesNothingInTheBucket kills an origin in the
// middle of a chunk of an upload, so the store holds the session, a
// committed chunk and the bytes of the one cut short (on S3 an open
// multipart upload, which is no object: listing the bucket does not show
// it, and S3 keeps its parts until it is aborted). Once the session is
// older than gc.uploadMaxAge, another origin's GC purges it, and nothing
// of it is left in the bucket: no object, no open multipart upload, no
// uncommitted Azure blob.
func TestAbandonedUploadLeavesNothingInTheBucket(t *testing.T) {
	eachStore(t, func(t *testing.T, o *testenv.ObjectStore) {
		const prefix, repo = "/shoal", "cleanup/app"
		storageURL := o.StorageURL(prefix)
		bin := testenv.Binary(t, "origin")
		killed, err := testenv.StartOrigin(t.Context(), testenv.OriginOptions{Binary: bin, Storage: storageURL, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = killed.Stop(testenv.DefaultStopTimeout) })

		loc, id := startUpload(t, killed.URL(), repo)
		first := make([]byte, 6<<20)
		if _, err := rand.Read(first); err != nil {
			t.Fatal(err)
		}
		resp := do(t, http.MethodPatch, loc.String(), first, map[string]string{"Content-Type": "application/octet-stream"})
		wantStatus(t, resp, http.StatusAccepted, "PATCH of the first chunk")
		loc = location(t, killed.URL(), resp)

		// The second chunk: 11 MiB sent (past S3's 10 MiB part and
		// Azure's 4 MiB blocks), then the origin dies before the rest.
		uploadDir := strings.TrimPrefix(prefix, "/") + "/docker/registry/v2/repositories/" + repo + "/_uploads/" + id
		sent := streamChunk(t, http.MethodPatch, loc.String(), 11<<20)
		select {
		case <-sent:
		case <-t.Context().Done():
			t.Fatal("the test ended before the second chunk was sent")
		}
		eventually.True(t, "the store to hold the bytes of the chunk cut short", func() bool {
			return cutShortInStore(t, o, uploadDir, int64(len(first)))
		})
		killed.Kill()
		if left := leftovers(t, o, uploadDir); len(left) == 0 {
			t.Fatal("the killed upload left nothing in the store to clean up: the test shows nothing")
		} else {
			t.Logf("left by the killed origin: %s", strings.Join(left, ", "))
		}

		purgeWithGC(t, storageURL, repo, id)
		if left := leftovers(t, o, uploadDir); len(left) > 0 {
			t.Errorf("after GC purged the abandoned upload, the store still holds: %s", strings.Join(left, ", "))
		}
	})
}

// purgeWithGC moves the start of upload id of repository repo, in the
// store at storageURL, two days back, so that it is older than
// gc.uploadMaxAge, and has GC purge it: an origin started for it runs one
// collection (gc.uploadMaxAge 1h), which must report the upload purged.
func purgeWithGC(t *testing.T, storageURL, repo, id string) {
	t.Helper()
	drv, err := drivers.Open(t.Context(), storageURL)
	if err != nil {
		t.Fatal(err)
	}
	startedAt := "/docker/registry/v2/repositories/" + repo + "/_uploads/" + id + "/startedat"
	if err := drv.PutContent(t.Context(), startedAt, []byte(time.Now().Add(-48*time.Hour).UTC().Format(time.RFC3339))); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "origin.yaml")
	if err := os.WriteFile(cfg, []byte("gc:\n  interval: 0s\n  grace: 1m\n  uploadMaxAge: 1h\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	admin, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	testenv.Origin(t, storageURL, "--config", cfg, "--admin-listen", admin)
	report := runGC(t, admin)
	purged := false
	for _, u := range report.Uploads {
		purged = purged || u.ID == id
	}
	if !purged {
		t.Fatalf("GC purged uploads %+v, not %s (report error %q)", report.Uploads, id, report.Error)
	}
}

// streamChunk sends n random bytes to the upload at u (with method PATCH,
// or PUT with ?digest= in u) and then nothing more: the request stays open
// until the test ends. The channel closes once the n bytes are handed to
// the connection.
func streamChunk(t *testing.T, method, u string, n int) <-chan struct{} {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.CloseWithError(errors.New("test over")) })
	req, err := http.NewRequestWithContext(t.Context(), method, u, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	sent := make(chan struct{})
	go func() {
		buf := make([]byte, 1<<20)
		for range n >> 20 {
			_, _ = rand.Read(buf)
			if _, err := pw.Write(buf); err != nil {
				return
			}
		}
		close(sent)
	}()
	return sent
}

// runGC starts a collection through the admin API at admin and returns its
// report once it has finished.
func runGC(t *testing.T, admin string) *gc.Report {
	t.Helper()
	resp, err := http.Post("http://"+admin+"/admin/v1/gc?dryRun=false", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("starting GC: %s", resp.Status)
	}
	var st gc.Status
	eventually.True(t, "the collection to finish", func() bool {
		resp, err := http.Get("http://" + admin + "/admin/v1/gc")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		st = gc.Status{}
		return json.NewDecoder(resp.Body).Decode(&st) == nil && !st.Running && st.Last != nil
	})
	if st.Last.Error != "" {
		t.Fatalf("GC failed: %s", st.Last.Error)
	}
	return st.Last
}

// cutShortInStore reports whether the store holds bytes of the upload
// under dir past its committed size: on S3 an open multipart upload with a
// part, on Azure an append blob grown past it. GCS shows nothing before a
// resumable upload is finalized, so there the bytes sent are enough.
func cutShortInStore(t *testing.T, o *testenv.ObjectStore, dir string, committed int64) bool {
	switch o.Kind {
	case testenv.KindS3:
		c := s3Client(t, o)
		mpus, err := c.ListMultipartUploadsWithContext(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(o.Bucket), Prefix: aws.String(dir + "/")})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range mpus.Uploads {
			parts, err := c.ListPartsWithContext(t.Context(), &s3.ListPartsInput{Bucket: aws.String(o.Bucket), Key: u.Key, UploadId: u.UploadId})
			if err == nil && len(parts.Parts) > 0 {
				return true
			}
		}
		return false
	case testenv.KindAzure:
		var total int64
		forEachAzureBlob(t, o, dir, func(_ string, size int64) { total += size })
		return total > committed+1<<20
	default:
		return true
	}
}

// leftovers lists what the store holds under dir: objects, and on S3 open
// multipart uploads, on Azure blobs with uncommitted blocks too.
func leftovers(t *testing.T, o *testenv.ObjectStore, dir string) []string {
	t.Helper()
	var out []string
	switch o.Kind {
	case testenv.KindS3:
		c := s3Client(t, o)
		objs, err := c.ListObjectsV2WithContext(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(o.Bucket), Prefix: aws.String(dir + "/")})
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range objs.Contents {
			out = append(out, "object "+aws.StringValue(obj.Key))
		}
		mpus, err := c.ListMultipartUploadsWithContext(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(o.Bucket), Prefix: aws.String(dir + "/")})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range mpus.Uploads {
			out = append(out, "open multipart upload "+aws.StringValue(u.Key))
		}
	case testenv.KindAzure:
		forEachAzureBlob(t, o, dir, func(name string, size int64) { out = append(out, fmt.Sprintf("blob %s (%d bytes)", name, size)) })
	case testenv.KindGCS:
		c, err := storage.NewClient(t.Context(), option.WithEndpoint(o.URL()+"/storage/v1/"), option.WithoutAuthentication(), storage.WithJSONReads())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		it := c.Bucket(o.Bucket).Objects(t.Context(), &storage.Query{Prefix: dir + "/"})
		for {
			obj, err := it.Next()
			if errors.Is(err, iterator.Done) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, "object "+obj.Name)
		}
	}
	return out
}

func s3Client(t *testing.T, o *testenv.ObjectStore) *s3.S3 {
	t.Helper()
	sess, err := session.NewSession(aws.NewConfig().WithEndpoint(o.Endpoint()).WithRegion("us-east-1").WithS3ForcePathStyle(true).WithDisableSSL(true))
	if err != nil {
		t.Fatal(err)
	}
	return s3.New(sess)
}

// forEachAzureBlob calls f with every blob under dir, those with only
// uncommitted blocks included.
func forEachAzureBlob(t *testing.T, o *testenv.ObjectStore, dir string, f func(name string, size int64)) {
	t.Helper()
	cred, err := azblob.NewSharedKeyCredential(testenv.AzuriteAccount, testenv.AzuriteKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := azblob.NewClientWithSharedKeyCredential(o.Endpoint(), cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	pager := c.NewListBlobsFlatPager(o.Bucket, &azblob.ListBlobsFlatOptions{
		Prefix:  aws.String(dir + "/"),
		Include: container.ListBlobsInclude{UncommittedBlobs: true},
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			var size int64
			if b.Properties != nil && b.Properties.ContentLength != nil {
				size = *b.Properties.ContentLength
			}
			f(*b.Name, size)
		}
	}
}
