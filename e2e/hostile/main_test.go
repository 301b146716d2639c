// Package hostile_test attacks a real origin process the way issue 13
// describes, one attack per test, and proves that honest clients keep
// being served while it runs: trickling and stalled upload bodies, a
// manifest listing thousands of unknown layers, non-canonical paths, a
// flood of catalog requests, and storage going away under the origin.
//
// Nothing is timed: the tests wait on conditions (the origin's metrics,
// the answers it gives) and count storage calls through the origin's own
// storage metrics.
package hostile_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// startOrigin starts an origin process on storage with config (YAML, the
// origin's config file) and stops it when the test ends. Scheduled GC is
// off so that the only storage calls are the tests' own.
func startOrigin(t *testing.T, storage, config string) *testenv.Server {
	t.Helper()
	p := filepath.Join(t.TempDir(), "origin.yaml")
	if err := os.WriteFile(p, []byte("gc:\n  interval: 0s\n"+config), 0o644); err != nil {
		t.Fatal(err)
	}
	return testenv.Origin(t, storage, "--config", p)
}

// answer is a response, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) String() string {
	b := a.body
	if len(b) > 300 {
		b = b[:300]
	}
	return fmt.Sprintf("%d %s", a.status, b)
}

// ociCode is the first OCI error code of the body, if any.
func (a answer) ociCode() string {
	var eb struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if json.Unmarshal(a.body, &eb) != nil || len(eb.Errors) == 0 {
		return ""
	}
	return eb.Errors[0].Code
}

// client is an honest registry client of one origin.
type client struct {
	t    testing.TB
	base string
	http *http.Client
}

func newClient(t testing.TB, s *testenv.Server) *client {
	return &client{t: t, base: s.URL(), http: &http.Client{Timeout: 2 * time.Minute}}
}

func (c *client) do(method, target string, body []byte, hdr ...string) answer {
	c.t.Helper()
	if !strings.HasPrefix(target, "http") {
		target = c.base + target
	}
	req, err := http.NewRequestWithContext(context.Background(), method, target, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading the answer: %v", method, target, err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func (c *client) expect(a answer, status int, what string) answer {
	c.t.Helper()
	if a.status != status {
		c.t.Fatalf("%s: %v, want %d", what, a, status)
	}
	return a
}

func sha256Digest(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// pushChunked pushes blob in three chunks, as docker and containerd do
// for large layers, and returns its digest.
func (c *client) pushChunked(repo string, blob []byte) string {
	c.t.Helper()
	a := c.expect(c.do("POST", "/v2/"+repo+"/blobs/uploads/", nil), http.StatusAccepted, "honest upload start")
	loc := a.header.Get("Location")
	third := len(blob) / 3
	for _, r := range [][2]int{{0, third}, {third, 2 * third}, {2 * third, len(blob)}} {
		a = c.expect(c.do("PATCH", loc, blob[r[0]:r[1]], "Content-Type", "application/octet-stream",
			"Content-Range", fmt.Sprintf("%d-%d", r[0], r[1]-1)), http.StatusAccepted, "honest chunk")
		loc = a.header.Get("Location")
	}
	d := sha256Digest(blob)
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	c.expect(c.do("PUT", loc+sep+"digest="+d, nil), http.StatusCreated, "honest upload finish")
	return d
}

// pushImage pushes a config, a layer in chunks and a tagged manifest, then
// pulls it all back and checks every byte.
func (c *client) pushImage(repo, tag string, layer []byte) {
	c.t.Helper()
	config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%q]}}`, sha256Digest(layer)))
	configDigest := sha256Digest(config)
	c.expect(c.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+configDigest, config), http.StatusCreated, "honest config push")
	layerDigest := c.pushChunked(repo, layer)
	manifest := manifestOf(configDigest, len(config), [][2]any{{layerDigest, len(layer)}})
	c.expect(c.do("PUT", "/v2/"+repo+"/manifests/"+tag, manifest, "Content-Type", "application/vnd.oci.image.manifest.v1+json"),
		http.StatusCreated, "honest manifest push")
	if got := c.expect(c.do("GET", "/v2/"+repo+"/manifests/"+tag, nil, "Accept", "application/vnd.oci.image.manifest.v1+json"),
		http.StatusOK, "honest manifest pull").body; !bytes.Equal(got, manifest) {
		c.t.Fatalf("manifest %s:%s pulled back differs from the one pushed", repo, tag)
	}
	for d, want := range map[string][]byte{configDigest: config, layerDigest: layer} {
		if got := c.expect(c.do("GET", "/v2/"+repo+"/blobs/"+d, nil), http.StatusOK, "honest blob pull").body; !bytes.Equal(got, want) {
			c.t.Fatalf("blob %s pulled back: %d bytes, want the %d pushed", d, len(got), len(want))
		}
	}
}

// manifestOf is an OCI image manifest over a config and layers given as
// (digest, size) pairs.
func manifestOf(config string, configSize int, layers [][2]any) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[`, config, configSize)
	for i, l := range layers {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}`, l[0], l[1])
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// metrics scrapes the origin's /metrics.
func metrics(t testing.TB, s *testenv.Server) testenv.Metrics {
	t.Helper()
	m, err := testenv.ScrapeMetrics(context.Background(), s.URL()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// storageCalls counts the calls the origin made to its storage driver, by
// the samples of shoal_storage_operation_duration_seconds, of the given
// operations (all when none are given).
func storageCalls(m testenv.Metrics, ops ...string) uint64 {
	fam, ok := m["shoal_storage_operation_duration_seconds"]
	if !ok {
		return 0
	}
	var n uint64
	for _, s := range fam.GetMetric() {
		match := len(ops) == 0
		for _, l := range s.GetLabel() {
			for _, op := range ops {
				if l.GetName() == "operation" && l.GetValue() == op {
					match = true
				}
			}
		}
		if match {
			n += s.GetHistogram().GetSampleCount()
		}
	}
	return n
}
