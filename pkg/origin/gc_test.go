package origin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/filesystem"
)

// TestPushesDuringGCNeverLoseABlob runs garbage collection over and over
// while clients push manifests whose layers are old, unreferenced blobs —
// exactly what a sweep is deleting. Every push the origin acknowledged must
// pull whole afterwards; a refused push is retried, as clients do.
func TestPushesDuringGCNeverLoseABlob(t *testing.T) {
	root := t.TempDir()
	fsd, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	// Slow deletes widen the window between a sweep's last look at the
	// links and its deletion, where a push without the guard loses blobs.
	drv := slowDeletes{fsd}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(drv, DefaultConfig(), quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetReferenceGuard(gc.NewGuard(drv))
	ts := httptest.NewServer(srv)
	defer ts.Close()

	// Orphans: blobs stored long ago and referenced by nothing, so every
	// collection wants to delete them.
	rng := rand.New(rand.NewPCG(1, 2))
	var orphans [][]byte
	for i := range 64 {
		b := []byte(fmt.Sprintf("orphan layer %d %d", i, rng.Uint64()))
		d := digest.FromBytes(b)
		if err := drv.PutContent(t.Context(), blobDataPath(d), b); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-3 * time.Hour)
		if err := os.Chtimes(filepath.Join(root, blobDataPath(d)), old, old); err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, b)
	}

	cfg := gc.DefaultConfig()
	cfg.Interval = 0
	cfg.LeaseTTL = gc.Duration(10 * time.Second)
	runner, err := gc.NewRunner(drv, cfg, gc.RunnerOptions{
		Deleter: gc.APIDeleter{Driver: drv, API: srv}, Logger: quiet, LeaseSettle: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	var gcRuns, blobsFreed int
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for ctx.Err() == nil {
			rep, err := runner.Run(ctx, gc.RunOptions{})
			if err == nil {
				gcRuns++
				blobsFreed += len(rep.Blobs)
			}
		}
	}()

	type pushed struct {
		repo, tag string
		layer     []byte
	}
	var (
		mu     sync.Mutex
		acked  []pushed
		wg     sync.WaitGroup
		client = &http.Client{Timeout: 30 * time.Second}
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 16 {
				layer := orphans[(w*16+i)%len(orphans)]
				repo, tag := fmt.Sprintf("gc/w%d", w), fmt.Sprintf("t%d", i)
				for attempt := 0; ; attempt++ {
					if attempt == 50 {
						t.Errorf("push %s:%s refused 50 times", repo, tag)
						return
					}
					if pushImage(client, ts.URL, repo, tag, layer) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				mu.Lock()
				acked = append(acked, pushed{repo, tag, layer})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stop()
	<-gcDone
	// One more collection after the pushes: it must not take what they
	// reference either.
	if _, err := runner.Run(t.Context(), gc.RunOptions{}); err != nil {
		t.Fatalf("final collection: %v", err)
	}
	t.Logf("%d collections freed %d blobs while %d pushes were acknowledged", gcRuns, blobsFreed, len(acked))
	if gcRuns == 0 {
		t.Fatal("no collection finished during the pushes; the test proved nothing")
	}
	for _, p := range acked {
		resp, err := client.Get(ts.URL + "/v2/" + p.repo + "/blobs/" + digest.FromBytes(p.layer).String())
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, p.layer) {
			t.Errorf("%s:%s was acknowledged, but its layer now answers %s", p.repo, p.tag, resp.Status)
		}
		resp, err = client.Get(ts.URL + "/v2/" + p.repo + "/manifests/" + p.tag)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s:%s was acknowledged, but its manifest answers %s", p.repo, p.tag, resp.Status)
		}
	}
}

type slowDeletes struct{ storage.Driver }

func (d slowDeletes) Delete(ctx context.Context, p string) error {
	time.Sleep(5 * time.Millisecond)
	return d.Driver.Delete(ctx, p)
}

// pushImage pushes a one-layer image the way clients do (blobs, then the
// manifest) and reports whether the registry acknowledged all of it.
func pushImage(c *http.Client, base, repo, tag string, layer []byte) bool {
	config := []byte(fmt.Sprintf(`{"tag":%q}`, tag))
	for _, b := range [][]byte{layer, config} {
		resp, err := c.Post(base+"/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(b).String(), "application/octet-stream", bytes.NewReader(b))
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return false
		}
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`,
		digest.FromBytes(config), len(config), digest.FromBytes(layer), len(layer))
	req, _ := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader([]byte(m)))
	req.Header.Set("Content-Type", mediaTypeOCIManifest)
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusCreated
}
