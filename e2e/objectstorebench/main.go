// Command objectstorebench (make bench-storage) measures the origin on each
// object store next to registry:2 on the same store in the same run: push
// and pull MB/s of one large blob, manifest HEAD requests per second, and
// how many requests each makes to the store per push and per pull. The
// stores are the test servers of e2e/testenv (versitygw, Azurite,
// fake-gcs-server) on this machine, so the figures compare the two
// registries' use of a store, not the clouds. It prints figures and asserts
// nothing.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

func main() {
	stores := flag.String("stores", "s3,azure,gs", "object store kinds to measure, comma-separated")
	sizeMiB := flag.Int("size", 256, "blob size in MiB for push and pull")
	headFor := flag.Duration("head-duration", 5*time.Second, "how long to send manifest HEADs")
	headWorkers := flag.Int("head-workers", 8, "concurrent manifest HEAD clients")
	flag.Parse()
	if err := run(strings.Split(*stores, ","), *sizeMiB<<20, *headFor, *headWorkers); err != nil {
		fmt.Fprintln(os.Stderr, "objectstorebench:", err)
		os.Exit(1)
	}
}

// result is one registry's figures on one store.
type result struct {
	store, registry             string
	pushMBps, pullMBps, headRPS float64
	pushReqs, pullReqs          int64
	note                        string
}

func run(kinds []string, size int, headFor time.Duration, headWorkers int) error {
	ctx := context.Background()
	w, err := testenv.FindWorkspace()
	if err != nil {
		return err
	}
	originBin, err := w.Build(ctx, "origin", testenv.BuildOptions{})
	if err != nil {
		return err
	}
	registryBin, err := w.Install(ctx, testenv.ReferenceRegistry)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "shoal-storagebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	blob := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(blob)
	sum := sha256.Sum256(blob)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	// The warm-up moves a blob of the same size but other content, so the
	// measured push is not of a blob already stored.
	warm := append([]byte{^blob[0]}, blob[1:]...)
	wsum := sha256.Sum256(warm)
	warmDigest := "sha256:" + hex.EncodeToString(wsum[:])
	fmt.Printf("blob %d MiB, manifest HEADs for %s with %d clients\n", size>>20, headFor, headWorkers)

	var results []result
	for _, kind := range kinds {
		dir := tmp + "/" + kind
		o, err := w.StartObjectStore(ctx, kind, dir)
		if err != nil {
			return fmt.Errorf("starting the %s store: %w", kind, err)
		}
		for _, kv := range o.Env {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
		// Each registry reaches the store through its own counting
		// proxy, so that its requests can be told apart.
		viaOrigin, originCount := counted(o)
		origin, err := testenv.StartOrigin(ctx, testenv.OriginOptions{Binary: originBin, Storage: viaOrigin.StorageURL("/bench"), Dir: dir})
		if err != nil {
			_ = o.Stop(testenv.DefaultStopTimeout)
			return err
		}
		// A store's first large transfers are slower (Azurite's
		// JavaScript is compiled as it runs): one unmeasured round
		// first, so that the order of the registries does not decide.
		_ = measure(ctx, kind, "warm-up", origin.URL(), originCount, warm, warmDigest, 0, 1)
		r := measure(ctx, kind, "shoal origin", origin.URL(), originCount, blob, digest, headFor, headWorkers)
		results = append(results, r)
		_ = origin.Stop(testenv.DefaultStopTimeout)

		if kind == testenv.KindGCS {
			results = append(results, result{store: kind, registry: "registry:2", note: "its gcs driver cannot reach an emulator (docs/storage.md)"})
		} else {
			viaReg, regCount := counted(o)
			reg, err := testenv.StartRegistryOnStore(ctx, registryBin, viaReg, "/bench-registry", dir)
			if err != nil {
				_ = o.Stop(testenv.DefaultStopTimeout)
				return err
			}
			results = append(results, measure(ctx, kind, "registry:2", reg.URL(), regCount, blob, digest, headFor, headWorkers))
			_ = reg.Stop(testenv.DefaultStopTimeout)
		}
		_ = o.Stop(testenv.DefaultStopTimeout)
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "store\tregistry\tpush MB/s\tpull MB/s\tmanifest HEAD/s\tstore requests per push\tper pull\t")
	for _, r := range results {
		if r.note != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t  %s\n", r.store, r.registry, r.note)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%d\t%d\t\n", r.store, r.registry, r.pushMBps, r.pullMBps, r.headRPS, r.pushReqs, r.pullReqs)
	}
	return tw.Flush()
}

// counted returns o as seen through a proxy that counts the requests to it.
func counted(o *testenv.ObjectStore) (*testenv.ObjectStore, *atomic.Int64) {
	target, _ := url.Parse(o.URL())
	rp := httputil.NewSingleHostReverseProxy(target)
	// A HEAD client stopping at the deadline cancels the registry's
	// request to the store mid-way: not worth a log line.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		rp.ServeHTTP(w, r)
	}))
	via := *o
	via.Server = &testenv.Server{Process: o.Process, Addr: strings.TrimPrefix(srv.URL, "http://")}
	return &via, &n
}

func measure(ctx context.Context, kind, name, base string, count *atomic.Int64, blob []byte, digest string, headFor time.Duration, workers int) result {
	r := result{store: kind, registry: name}
	mb := float64(len(blob)) / 1e6

	before := count.Load()
	start := time.Now()
	repo := "bench/" + strings.ReplaceAll(strings.ReplaceAll(name, ":", ""), " ", "-")
	if err := pushBlob(ctx, base, repo, blob, digest); err != nil {
		r.note = "push failed: " + err.Error()
		return r
	}
	r.pushMBps = mb / time.Since(start).Seconds()
	r.pushReqs = count.Load() - before

	before = count.Load()
	start = time.Now()
	n, err := pull(ctx, base+"/v2/"+repo+"/blobs/"+digest)
	if err != nil || n != int64(len(blob)) {
		r.note = fmt.Sprintf("pull failed: %d bytes, %v", n, err)
		return r
	}
	r.pullMBps = mb / time.Since(start).Seconds()
	r.pullReqs = count.Load() - before

	if headFor == 0 {
		return r
	}
	ref, err := pushManifest(ctx, base, repo, "v1")
	if err != nil {
		r.note = "manifest push failed: " + err.Error()
		return r
	}
	r.headRPS = heads(ctx, ref, headFor, workers)
	return r
}

// pushBlob uploads blob with a POST and one streaming PUT, as clients that
// know the digest do.
func pushBlob(ctx context.Context, base, repo string, blob []byte, digest string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST: %s", resp.Status)
	}
	loc, err := url.Parse(base)
	if err != nil {
		return err
	}
	l, err := loc.Parse(resp.Header.Get("Location"))
	if err != nil {
		return err
	}
	q := l.Query()
	q.Set("digest", digest)
	l.RawQuery = q.Encode()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, l.String(), bytes.NewReader(blob))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT: %s %s", resp.Status, body)
	}
	return nil
}

func pull(ctx context.Context, u string) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET: %s", resp.Status)
	}
	return io.Copy(io.Discard, resp.Body)
}

// pushManifest pushes an image manifest with an empty config and no
// layers under tag and returns the manifest's URL.
func pushManifest(ctx context.Context, base, repo, tag string) (string, error) {
	config := []byte("{}")
	sum := sha256.Sum256(config)
	cd := "sha256:" + hex.EncodeToString(sum[:])
	if err := pushBlob(ctx, base, repo, config, cd); err != nil {
		return "", err
	}
	m, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
		"layers":        []any{},
	})
	u := base + "/v2/" + repo + "/manifests/" + tag
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(m))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("manifest PUT: %s %s", resp.Status, body)
	}
	return u, nil
}

// heads sends manifest HEADs from workers clients for d and returns the
// rate of successful ones.
func heads(ctx context.Context, u string, d time.Duration, workers int) float64 {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var ok atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
				req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(ok.Load()) / time.Since(start).Seconds()
}
