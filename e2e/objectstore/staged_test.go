package objectstore

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/service/s3"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// TestStagedPushesOnEachStore: on each store a push whose one request
// carries the blob and its digest is written straight to the blob's key
// and committed only once the digest checks (docs/storage.md, "Staged
// pushes"). registry:2 on the same prefix serves those blobs (on S3 and
// Azure: its gcs driver cannot reach an emulator); a body with another
// digest is refused with DIGEST_INVALID and leaves no blob, for the origin
// or registry:2, and on S3 no open multipart upload.
func TestStagedPushesOnEachStore(t *testing.T) {
	for _, kind := range testenv.ObjectStoreKinds {
		t.Run(kind, func(t *testing.T) {
			o := testenv.ObjectStoreServer(t, kind)
			const prefix, repo = "/registry", "staged/app"
			origin := testenv.Origin(t, o.StorageURL(prefix))
			servers := []*testenv.Server{origin}
			if kind != testenv.KindGCS { // registry:2's gcs driver cannot reach an emulator
				servers = append(servers, testenv.RegistryOnStore(t, o, prefix))
			}

			// Past S3's 10 MiB parts, Azure's 8 MiB blocks and GCS's
			// 16 MiB chunks, and under all (sent whole at commit).
			large, small := randomBlob(t, 21<<20+5), randomBlob(t, 3000)
			resp := do(t, http.MethodPost, origin.URL()+"/v2/"+repo+"/blobs/uploads/", nil, nil)
			wantStatus(t, resp, http.StatusAccepted, "POST of an upload")
			resp = do(t, http.MethodPut, withDigest(location(t, origin.URL(), resp), sha256Digest(large)), large, nil)
			wantStatus(t, resp, http.StatusCreated, "PUT of the whole blob")
			resp = do(t, http.MethodPost, origin.URL()+"/v2/"+repo+"/blobs/uploads/?digest="+sha256Digest(small), small, nil)
			wantStatus(t, resp, http.StatusCreated, "monolithic POST")
			for _, b := range [][]byte{large, small} {
				for _, s := range servers {
					if got := getBlob(t, s.Addr, repo, sha256Digest(b)); !bytes.Equal(got, b) {
						t.Errorf("blob of %d bytes read from %s: %d bytes that differ", len(b), s.Addr, len(got))
					}
				}
			}

			wrong := append(bytes.Clone(large[:len(large)-1]), large[len(large)-1]^1)
			claimed := sha256Digest(large[:len(large)-1])
			resp = do(t, http.MethodPost, origin.URL()+"/v2/"+repo+"/blobs/uploads/", nil, nil)
			wantStatus(t, resp, http.StatusAccepted, "POST of an upload")
			resp = do(t, http.MethodPut, withDigest(location(t, origin.URL(), resp), claimed), wrong, nil)
			wantStatus(t, resp, http.StatusBadRequest, "PUT of a body with another digest")
			if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "DIGEST_INVALID") {
				t.Errorf("the refused PUT's answer does not say DIGEST_INVALID: %s", b)
			}
			for _, d := range []string{claimed, sha256Digest(wrong)} {
				for _, s := range servers {
					wantStatus(t, do(t, http.MethodHead, "http://"+s.Addr+"/v2/"+repo+"/blobs/"+d, nil, nil), http.StatusNotFound, "HEAD of "+d+" on "+s.Addr+" after the refused PUT")
				}
			}
			if kind == testenv.KindS3 {
				if open := openMultipartUploads(t, o, strings.TrimPrefix(prefix, "/")); len(open) > 0 {
					t.Errorf("open multipart uploads after the pushes: %v", open)
				}
			}
		})
	}
}

// TestKilledStagedPushLeavesNothingOnS3: an origin killed in the middle of
// a PUT that carries the whole blob leaves an open multipart upload at the
// blob's own key, outside the session; once the session is older than
// gc.uploadMaxAge, GC's purge of the session aborts it (through the marker
// the S3 driver keeps in the session), and nothing is left: no object, no
// open upload. (On Azure a killed staged push leaves uncommitted blocks,
// which are no blob and which Azure discards after a week.)
func TestKilledStagedPushLeavesNothingOnS3(t *testing.T) {
	o := testenv.ObjectStoreServer(t, testenv.KindS3)
	const prefix, repo = "/shoal", "staged/killed"
	storageURL := o.StorageURL(prefix)
	killed, err := testenv.StartOrigin(t.Context(), testenv.OriginOptions{Binary: testenv.Binary(t, "origin"), Storage: storageURL, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = killed.Stop(testenv.DefaultStopTimeout) })

	loc, id := startUpload(t, killed.URL(), repo)
	claimed := sha256Digest([]byte("the blob the killed push claimed"))
	hex := strings.TrimPrefix(claimed, "sha256:")
	blobKey := strings.TrimPrefix(prefix, "/") + "/docker/registry/v2/blobs/sha256/" + hex[:2] + "/" + hex + "/data"
	sent := streamChunk(t, http.MethodPut, withDigest(loc, claimed), 31<<20)
	select {
	case <-sent:
	case <-t.Context().Done():
		t.Fatal("the test ended before the body was sent")
	}
	eventually.True(t, "an open multipart upload with parts at the blob's key", func() bool {
		return cutShortInStore(t, o, strings.TrimSuffix(blobKey, "/data"), 0)
	})
	killed.Kill()
	uploadDir := strings.TrimPrefix(prefix, "/") + "/docker/registry/v2/repositories/" + repo + "/_uploads/" + id
	if open := openMultipartUploads(t, o, blobKey); len(open) != 1 {
		t.Fatalf("open multipart uploads at the blob's key after the kill: %v, want one", open)
	}

	purgeWithGC(t, storageURL, repo, id)
	if open := openMultipartUploads(t, o, blobKey); len(open) > 0 {
		t.Errorf("after GC purged the killed push's session, open multipart uploads at the blob's key: %v", open)
	}
	if left := leftovers(t, o, uploadDir); len(left) > 0 {
		t.Errorf("after GC purged the killed push's session, the store still holds: %s", strings.Join(left, ", "))
	}
	if left := leftovers(t, o, strings.TrimSuffix(blobKey, "/data")); len(left) > 0 {
		t.Errorf("after GC purged the killed push's session, the blob's key holds: %s", strings.Join(left, ", "))
	}
}

// withDigest is upload location u with ?digest=d, for its closing PUT.
func withDigest(u *url.URL, d string) string {
	v := *u
	q := v.Query()
	q.Set("digest", d)
	v.RawQuery = q.Encode()
	return v.String()
}

// openMultipartUploads lists the keys of the multipart uploads open at or
// under key on S3.
func openMultipartUploads(t *testing.T, o *testenv.ObjectStore, key string) []string {
	t.Helper()
	out, err := s3Client(t, o).ListMultipartUploadsWithContext(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(o.Bucket), Prefix: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.StringValue(u.Key))
	}
	return keys
}
