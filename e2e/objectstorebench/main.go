// Command objectstorebench (make bench-storage) measures the origin on each
// object store next to registry:2 on the same store in the same run: push
// and pull MB/s of one large blob, manifest HEAD requests per second, how
// many requests each makes to the store per push and per pull, and the
// CPU time the registry and the store spend on each. The stores are the
// test servers of e2e/testenv (versitygw, Azurite, fake-gcs-server) on this
// machine, so the figures compare the two registries' use of a store, not
// the clouds.
//
// Both registries run at once, each behind its own counting proxy, and are
// measured in alternating rounds (Shoal first in even rounds, registry:2
// first in odd ones), so that a store or machine that speeds up or slows
// down during the run affects both alike. Each round prints its figures;
// the summary gives the medians and the median of the rounds' ratios. It
// asserts nothing.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/e2e/procstat"
	"github.com/shoal-dev/shoal/e2e/testenv"
)

func main() {
	var o options
	flag.StringVar(&o.stores, "stores", "s3,azure,gs", "object store kinds to measure, comma-separated")
	flag.IntVar(&o.sizeMiB, "size", 256, "blob size in MiB for push and pull")
	flag.IntVar(&o.rounds, "rounds", 5, "alternating rounds: each pushes, pulls and HEADs on every registry once")
	flag.DurationVar(&o.headFor, "head-duration", 3*time.Second, "how long to send manifest HEADs in each round")
	flag.IntVar(&o.headWorkers, "head-workers", 8, "concurrent manifest HEAD clients")
	flag.StringVar(&o.shoalParams, "shoal-params", "", "storage URL parameters added to the origin's, such as readRanges=0 (one streaming GET per read) or readRangeSize=16777216 (docs/storage.md)")
	quick := flag.Bool("quick", false, "a check that the benchmark works, not figures: -stores s3 -size 16 -rounds 2 -head-duration 500ms, unless set")
	flag.Parse()
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["stores"] {
			o.stores = testenv.KindS3
		}
		if !set["size"] {
			o.sizeMiB = 16
		}
		if !set["rounds"] {
			o.rounds = 2
		}
		if !set["head-duration"] {
			o.headFor = 500 * time.Millisecond
		}
	}
	if o.rounds < 1 || o.sizeMiB < 1 {
		fmt.Fprintln(os.Stderr, "objectstorebench: -rounds and -size must be at least 1")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "objectstorebench:", err)
		os.Exit(1)
	}
}

type options struct {
	stores      string
	sizeMiB     int
	rounds      int
	headFor     time.Duration
	headWorkers int
	// shoalParams are added to the origin's storage URL.
	shoalParams string
}

// The two registries, by the names the figures carry.
const (
	shoal     = "shoal origin"
	reference = "registry:2"
)

// sample is one registry's figures in one round.
type sample struct {
	pushMBps, pullMBps, headRPS float64
	// Store requests and the CPU seconds of the registry's and the
	// store's processes, per push and per pull.
	pushReqs, pullReqs         int64
	pushCPU, pullCPU           float64
	storePushCPU, storePullCPU float64
	pushKinds, pullKinds       map[string]int64
	pullTrace                  []string
	failed                     string
}

// registry is one registry on the store under measurement.
type registry struct {
	name  string
	url   string
	pid   int
	proxy *countingProxy
}

func run(o options) error {
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

	size := o.sizeMiB << 20
	blob := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(blob)
	fmt.Printf("blob %d MiB, %d alternating rounds, manifest HEADs for %s with %d clients per round; load average %s\n",
		o.sizeMiB, o.rounds, o.headFor, o.headWorkers, procstat.LoadAvg())
	if o.shoalParams != "" {
		fmt.Printf("the origin's storage URL has %s added\n", o.shoalParams)
	}

	var summaries []summary
	for _, kind := range strings.Split(o.stores, ",") {
		s, err := measureStore(ctx, w, o, kind, tmp+"/"+kind, originBin, registryBin, blob)
		if err != nil {
			return fmt.Errorf("%s store: %w", kind, err)
		}
		summaries = append(summaries, s...)
	}
	fmt.Printf("\nmedians of %d rounds; load average at the end %s\n", o.rounds, procstat.LoadAvg())
	printSummary(summaries)
	return nil
}

// measureStore starts a store of kind, the origin and (where its driver can
// reach the store) registry:2 on it, and measures them in alternating
// rounds.
// withParams adds the URL parameters params (k=v&k=v) to storageURL.
func withParams(storageURL, params string) string {
	if params == "" {
		return storageURL
	}
	return storageURL + "&" + params
}

func measureStore(ctx context.Context, w *testenv.Workspace, o options, kind, dir, originBin, registryBin string, blob []byte) ([]summary, error) {
	store, err := w.StartObjectStore(ctx, kind, dir)
	if err != nil {
		return nil, err
	}
	defer func() { _ = store.Stop(testenv.DefaultStopTimeout) }()
	for _, kv := range store.Env {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}

	var regs []*registry
	// Each registry reaches the store through its own counting proxy, so
	// that its requests can be told apart.
	viaOrigin, originProxy := counted(store)
	defer originProxy.Close()
	origin, err := testenv.StartOrigin(ctx, testenv.OriginOptions{Binary: originBin, Storage: withParams(viaOrigin.StorageURL("/bench"), o.shoalParams), Dir: dir})
	if err != nil {
		return nil, err
	}
	defer func() { _ = origin.Stop(testenv.DefaultStopTimeout) }()
	regs = append(regs, &registry{name: shoal, url: origin.URL(), pid: origin.PID(), proxy: originProxy})
	note := ""
	if kind == testenv.KindGCS {
		note = "its gcs driver cannot reach an emulator (docs/storage.md)"
	} else {
		viaReg, regProxy := counted(store)
		defer regProxy.Close()
		reg, err := testenv.StartRegistryOnStore(ctx, registryBin, viaReg, "/bench-registry", dir)
		if err != nil {
			return nil, err
		}
		defer func() { _ = reg.Stop(testenv.DefaultStopTimeout) }()
		regs = append(regs, &registry{name: reference, url: reg.URL(), pid: reg.PID(), proxy: regProxy})
	}

	// A store's first large transfers are slower (Azurite's JavaScript is
	// compiled as it runs): one unmeasured push and pull on each registry
	// first, so that the order of the registries does not decide.
	warm := round(blob, 0)
	for _, r := range regs {
		if s := measure(ctx, r, store.PID(), "bench/warm-up", warm); s.failed != "" {
			return nil, fmt.Errorf("warm-up on %s: %s", r.name, s.failed)
		}
	}
	refs := map[*registry]string{}
	for _, r := range regs {
		ref, err := pushManifest(ctx, r.url, "bench/manifest", "v1")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.name, err)
		}
		refs[r] = ref
	}

	samples := map[string][]sample{}
	for i := range o.rounds {
		b := round(blob, uint64(i)+1)
		order := slices.Clone(regs)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, r := range order {
			s := measure(ctx, r, store.PID(), "bench/round", b)
			if s.failed == "" {
				s.headRPS = heads(ctx, refs[r], o.headFor, o.headWorkers)
			}
			samples[r.name] = append(samples[r.name], s)
			printSample(kind, r.name, i, s)
			if s.failed != "" {
				return nil, fmt.Errorf("%s, round %d: %s", r.name, i+1, s.failed)
			}
		}
	}
	// The requests of one push and one pull, by kind, and the pull's
	// requests one by one: the same in every round.
	for _, r := range regs {
		s := samples[r.name][0]
		fmt.Printf("%s %s: a push asks the store %s\n", kind, r.name, kinds(s.pushKinds))
		fmt.Printf("%s %s: a pull asks the store %s\n", kind, r.name, strings.Join(s.pullTrace, "; "))
	}

	out := []summary{{store: kind, registry: shoal, samples: samples[shoal]}}
	if len(regs) > 1 {
		out = append(out, summary{store: kind, registry: reference, samples: samples[reference]})
	} else {
		out = append(out, summary{store: kind, registry: reference, note: note})
	}
	return out, nil
}

// round returns blob with its first 8 bytes set to id, so that each round
// pushes a blob no registry holds yet. It reuses blob's memory.
func round(blob []byte, id uint64) blobAt {
	binary.BigEndian.PutUint64(blob, id)
	sum := sha256.Sum256(blob)
	return blobAt{data: blob, digest: "sha256:" + hex.EncodeToString(sum[:])}
}

type blobAt struct {
	data   []byte
	digest string
}

// measure pushes b to r and pulls it back, counting r's store requests
// and the CPU time of r and of the store (process storePID).
func measure(ctx context.Context, r *registry, storePID int, repo string, b blobAt) sample {
	var s sample
	mb := float64(len(b.data)) / 1e6

	before, cpu, storeCPU := r.proxy.snapshot(), cpuSeconds(r.pid), cpuSeconds(storePID)
	start := time.Now()
	if err := pushBlob(ctx, r.url, repo, b.data, b.digest); err != nil {
		s.failed = "push failed: " + err.Error()
		return s
	}
	s.pushMBps = mb / time.Since(start).Seconds()
	s.pushCPU, s.storePushCPU = cpuSeconds(r.pid)-cpu, cpuSeconds(storePID)-storeCPU
	after := r.proxy.snapshot()
	s.pushReqs, s.pushKinds = after.since(before)

	before, cpu, storeCPU = after, cpuSeconds(r.pid), cpuSeconds(storePID)
	r.proxy.trace(true)
	start = time.Now()
	n, err := pull(ctx, r.url+"/v2/"+repo+"/blobs/"+b.digest)
	elapsed := time.Since(start)
	s.pullTrace = r.proxy.trace(false)
	if err != nil || n != int64(len(b.data)) {
		s.failed = fmt.Sprintf("pull failed: %d bytes, %v", n, err)
		return s
	}
	s.pullMBps = mb / elapsed.Seconds()
	s.pullCPU, s.storePullCPU = cpuSeconds(r.pid)-cpu, cpuSeconds(storePID)-storeCPU
	s.pullReqs, s.pullKinds = r.proxy.snapshot().since(before)
	return s
}

func printSample(kind, name string, i int, s sample) {
	if s.failed != "" {
		fmt.Printf("%s round %d %-12s %s\n", kind, i+1, name, s.failed)
		return
	}
	fmt.Printf("%s round %d %-12s push %4.0f MB/s (%d requests, CPU %.2fs, store %.2fs)  pull %4.0f MB/s (%d requests, CPU %.2fs, store %.2fs)  HEAD %5.0f/s  load %s\n",
		kind, i+1, name, s.pushMBps, s.pushReqs, s.pushCPU, s.storePushCPU, s.pullMBps, s.pullReqs, s.pullCPU, s.storePullCPU, s.headRPS, procstat.LoadAvg())
}

// summary is one registry's rounds on one store.
type summary struct {
	store, registry string
	samples         []sample
	note            string
}

func printSummary(sums []summary) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "store\tregistry\tpush MB/s\tpull MB/s\tmanifest HEAD/s\tstore requests per push\tper pull\tCPU-s per push\tper pull\tstore CPU-s per push\tper pull\t")
	byStore := map[string]map[string]summary{}
	for _, s := range sums {
		if byStore[s.store] == nil {
			byStore[s.store] = map[string]summary{}
		}
		byStore[s.store][s.registry] = s
		if s.note != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t  %s\n", s.store, s.registry, s.note)
			continue
		}
		m := func(f func(sample) float64) float64 { return median(s.samples, f) }
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", s.store, s.registry,
			m(func(x sample) float64 { return x.pushMBps }), m(func(x sample) float64 { return x.pullMBps }),
			m(func(x sample) float64 { return x.headRPS }),
			m(func(x sample) float64 { return float64(x.pushReqs) }), m(func(x sample) float64 { return float64(x.pullReqs) }),
			m(func(x sample) float64 { return x.pushCPU }), m(func(x sample) float64 { return x.pullCPU }),
			m(func(x sample) float64 { return x.storePushCPU }), m(func(x sample) float64 { return x.storePullCPU }))
	}
	_ = tw.Flush()

	// The ratio of each round's pair, then their median: a round's two
	// registries ran back to back, under the same load.
	for _, s := range sums {
		if s.registry != shoal {
			continue
		}
		ref := byStore[s.store][reference]
		if ref.note != "" || len(ref.samples) != len(s.samples) {
			continue
		}
		ratios := func(f func(sample) float64) string {
			var rs []float64
			for i := range s.samples {
				rs = append(rs, f(s.samples[i])/f(ref.samples[i]))
			}
			parts := make([]string, len(rs))
			for i, r := range rs {
				parts[i] = strconv.FormatFloat(r, 'f', 2, 64)
			}
			return fmt.Sprintf("%.2fx (rounds %s)", medianOf(rs), strings.Join(parts, " "))
		}
		fmt.Printf("%s, Shoal/registry:2, median of the rounds' ratios: push %s, pull %s, HEAD %s\n", s.store,
			ratios(func(x sample) float64 { return x.pushMBps }), ratios(func(x sample) float64 { return x.pullMBps }),
			ratios(func(x sample) float64 { return x.headRPS }))
	}
}

func median(ss []sample, f func(sample) float64) float64 {
	vs := make([]float64, len(ss))
	for i, s := range ss {
		vs[i] = f(s)
	}
	return medianOf(vs)
}

func medianOf(vs []float64) float64 {
	vs = slices.Clone(vs)
	slices.Sort(vs)
	n := len(vs)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// countingProxy forwards to a store and counts the requests by kind; while
// tracing it also keeps one line per request.
type countingProxy struct {
	srv *httptest.Server

	mu      sync.Mutex
	counts  map[string]int64
	tracing bool
	lines   []*traced
}

// traced is one request to the store while tracing.
type traced struct {
	kind, rng string
	status    int
	n         int64
}

// counted returns o as seen through a new counting proxy.
func counted(o *testenv.ObjectStore) (*testenv.ObjectStore, *countingProxy) {
	target, _ := url.Parse(o.URL())
	rp := httputil.NewSingleHostReverseProxy(target)
	// A HEAD client stopping at the deadline cancels the registry's
	// request to the store mid-way: not worth a log line.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	p := &countingProxy{counts: map[string]int64{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Counted as it arrives: a registry may finish its own answer
		// before this handler returns.
		e := &traced{kind: requestKind(r), rng: r.Header.Get("Range")}
		if e.rng == "" {
			e.rng = r.Header.Get("x-ms-range")
		}
		p.mu.Lock()
		p.counts[e.kind]++
		if p.tracing {
			p.lines = append(p.lines, e)
		}
		p.mu.Unlock()
		cw := &countingWriter{ResponseWriter: w}
		rp.ServeHTTP(cw, r)
		p.mu.Lock()
		e.status, e.n = cw.status, cw.n
		p.mu.Unlock()
	}))
	via := *o
	via.Server = &testenv.Server{Process: o.Process, Addr: strings.TrimPrefix(p.srv.URL, "http://")}
	return &via, p
}

func (p *countingProxy) Close() { p.srv.Close() }

// trace starts or stops keeping a line per request and returns the lines
// kept, of the requests that have ended then.
func (p *countingProxy) trace(on bool) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lines []string
	for _, e := range p.lines {
		line := e.kind
		if e.rng != "" {
			line += " Range " + e.rng
		}
		if e.status == 0 {
			lines = append(lines, line+": still open when the pull ended")
			continue
		}
		lines = append(lines, fmt.Sprintf("%s: %d, %s", line, e.status, byteSize(e.n)))
	}
	p.tracing, p.lines = on, nil
	return lines
}

// counts is a copy of a proxy's request counts at one moment.
type counts map[string]int64

func (p *countingProxy) snapshot() counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := counts{}
	for k, v := range p.counts {
		c[k] = v
	}
	return c
}

// since returns the requests made between c0 and c, in all and by kind.
func (c counts) since(c0 counts) (int64, map[string]int64) {
	var total int64
	d := map[string]int64{}
	for k, v := range c {
		if n := v - c0[k]; n > 0 {
			d[k] = n
			total += n
		}
	}
	return total, d
}

// requestKind names a store request by its method and the names of its
// query parameters (S3's uploadId, partNumber; Azure's comp; GCS's
// uploadType): what kind of call it is, not which object.
func requestKind(r *http.Request) string {
	var names []string
	for k, v := range r.URL.Query() {
		switch k {
		case "comp", "restype", "uploadType", "alt", "list-type":
			names = append(names, k+"="+v[0])
		case "uploads", "uploadId", "partNumber", "upload_id", "blockid":
			names = append(names, k)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return r.Method
	}
	return r.Method + " ?" + strings.Join(names, "&")
}

func kinds(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d× %s", m[k], k)
	}
	return strings.Join(parts, ", ")
}

// countingWriter counts the body bytes the store answered with.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// Flush keeps the reverse proxy's flushes working through the counter.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// cpuSeconds is the user and system CPU time process pid has used, or 0
// where it cannot be read (not Linux).
func cpuSeconds(pid int) float64 {
	d, err := procstat.CPU(pid)
	if err != nil {
		return 0
	}
	return d.Seconds()
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
	defer client.CloseIdleConnections()
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
