// Command bench measures Shoal's origin side by side with the reference registry (registry:2,
// distribution v3.1.2) on the same machine and filesystem, and prints each figure with the
// Shoal/registry:2 ratio and the target of issue 2:
//
//   - manifest HEAD and GET requests per second, by tag and by digest, with 64 concurrent clients
//     (target: Shoal at least 2x registry:2);
//   - single-stream throughput of a 256 MiB blob GET (target: at least registry:2's);
//   - peak server RSS while 100 clients GET that blob at once (target: Shoal under 200 MiB);
//   - throughput of a 256 MiB chunked push, POST + 8 MiB PATCHes + PUT (target: at least registry:2's).
//
// Both servers are built once at start (the origin from this module, the reference registry from
// the module proxy), each gets its own temp storage dir, and both are stopped by PID at the end,
// on error or interrupt too. Run it from the module root:
//
//	go run ./e2e/bench            # full run, a few minutes
//	go run ./e2e/bench -quick     # small blob, 1 s per rate: a smoke run in well under a minute
//
// The exit status is non-zero only when a measurement could not be taken; a MISS is a figure,
// not a failure.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"time"
)

const mib = 1 << 20

// config holds every knob of a run; defaults are the figures issue 2 asks for.
type config struct {
	shoal        string        // "origin" (cmd/origin) or "reference" (stand-in, ratios ~1)
	originBin    string        // prebuilt origin binary; empty builds cmd/origin
	registryBin  string        // prebuilt reference registry; empty builds it
	registryLog  string        // reference registry log level (registry:2 ships "info")
	clients      int           // concurrent clients for the manifest request rates
	duration     time.Duration // length of each request-rate measurement
	warmup       time.Duration // unmeasured run before each request-rate measurement
	rounds       int           // request-rate rounds per server, alternating order; the median is reported
	blobMiB      int64         // size of the pushed and pulled blob
	chunkMiB     int64         // PATCH chunk size of the chunked push
	pushReps     int           // chunked pushes per server (distinct blobs)
	getReps      int           // timed sequential GETs of the blob per server
	fanout       int           // concurrent GETs during the RSS measurement
	rssTargetMiB float64       // Shoal's RSS ceiling during the fan-out
	workDir      string        // where logs, configs and storage go; empty makes a temp dir
	keepData     bool          // keep storage dirs after the run
	markdown     bool          // print the table as Markdown
}

func parseFlags() config {
	var c config
	quick := flag.Bool("quick", false, "smoke run: 32 MiB blob, 1 s per rate, one push (explicit flags still win)")
	flag.StringVar(&c.shoal, "shoal", "origin", `what runs in the Shoal column: "origin" (cmd/origin) or "reference" (the reference registry again, to check the harness; ratios ~1)`)
	flag.StringVar(&c.originBin, "origin-bin", "", "use this origin binary instead of building cmd/origin")
	flag.StringVar(&c.registryBin, "registry-bin", "", "use this reference registry binary instead of building it")
	flag.StringVar(&c.registryLog, "registry-log-level", "info", "reference registry log level; info is what the registry:2 image runs with")
	flag.IntVar(&c.clients, "clients", 64, "concurrent clients for manifest requests per second")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "length of each requests-per-second measurement")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured load before each requests-per-second measurement")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds of each requests-per-second figure, servers alternating first; the median counts")
	flag.Int64Var(&c.blobMiB, "blob-mib", 256, "blob size in MiB for push and GET figures")
	flag.Int64Var(&c.chunkMiB, "chunk-mib", 8, "PATCH chunk size in MiB for the chunked push")
	flag.IntVar(&c.pushReps, "push-reps", 3, "chunked pushes per server, each a distinct blob")
	flag.IntVar(&c.getReps, "get-reps", 3, "timed sequential GETs of the blob per server")
	flag.IntVar(&c.fanout, "fanout", 100, "concurrent GETs of the blob while sampling the server RSS")
	flag.Float64Var(&c.rssTargetMiB, "rss-target-mib", 200, "Shoal's peak RSS ceiling during the fan-out, MiB")
	flag.StringVar(&c.workDir, "workdir", "", "directory for logs, configs and storage (default: a new temp dir)")
	flag.BoolVar(&c.keepData, "keep-data", false, "keep the servers' storage dirs after the run (logs are always kept)")
	flag.BoolVar(&c.markdown, "markdown", false, "print the result table as Markdown")
	flag.Parse()

	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quickDefaults := map[string]func(){
			"duration":  func() { c.duration = time.Second },
			"warmup":    func() { c.warmup = 300 * time.Millisecond },
			"blob-mib":  func() { c.blobMiB = 32 },
			"push-reps": func() { c.pushReps = 1 },
			"get-reps":  func() { c.getReps = 2 },
		}
		for name, apply := range quickDefaults {
			if !set[name] {
				apply()
			}
		}
	}
	return c
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	c := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		slog.Error("benchmark failed", "err", err)
		os.Exit(1)
	}
}

func (c config) validate() error {
	switch {
	case c.shoal != "origin" && c.shoal != "reference":
		return fmt.Errorf("-shoal must be origin or reference, not %q", c.shoal)
	case c.clients < 1 || c.fanout < 1 || c.pushReps < 1 || c.getReps < 1 || c.rounds < 1:
		return fmt.Errorf("-clients, -fanout, -push-reps, -get-reps and -rounds must be at least 1")
	case c.blobMiB < 1 || c.chunkMiB < 1:
		return fmt.Errorf("-blob-mib and -chunk-mib must be at least 1")
	case c.duration <= 0:
		return fmt.Errorf("-duration must be positive")
	}
	return nil
}

func run(ctx context.Context, c config) (err error) {
	if err := c.validate(); err != nil {
		return err
	}
	loadBefore := loadAvg()
	workDir := c.workDir
	if workDir == "" {
		if workDir, err = os.MkdirTemp("", "shoal-bench-"); err != nil {
			return fmt.Errorf("creating work dir: %w", err)
		}
	} else if err := os.MkdirAll(workDir, 0o755); err != nil {
		return fmt.Errorf("creating work dir: %w", err)
	}
	if workDir, err = filepath.Abs(workDir); err != nil {
		return fmt.Errorf("resolving work dir: %w", err)
	}
	slog.Info("work dir (logs and configs are kept here)", "dir", workDir)

	ws, err := testenv.FindWorkspace()
	if err != nil {
		return err
	}
	registryBin := c.registryBin
	if registryBin == "" {
		slog.Info("building reference registry", "tool", testenv.ReferenceRegistry)
		if registryBin, err = ws.Install(ctx, testenv.ReferenceRegistry); err != nil {
			return err
		}
	}
	originBin := c.originBin
	if c.shoal == "origin" && originBin == "" {
		slog.Info("building cmd/origin")
		if originBin, err = ws.Build(ctx, "origin", testenv.BuildOptions{}); err != nil {
			return fmt.Errorf("%w\n(use -shoal=reference to exercise the harness until the origin builds)", err)
		}
	}

	var servers []*server
	defer func() {
		for _, s := range servers {
			if stopErr := s.stop(); stopErr != nil {
				if s.graceful {
					slog.Error("stopping server", "name", s.name, "err", stopErr)
				} else {
					slog.Info("stopped server", "name", s.name, "exit", stopErr)
				}
			}
			if !c.keepData {
				if rmErr := os.RemoveAll(s.dataDir); rmErr != nil {
					slog.Error("removing storage dir", "dir", s.dataDir, "err", rmErr)
				}
			}
		}
		slog.Info("server logs", "dir", workDir)
	}()

	var shoal *server
	if c.shoal == "origin" {
		shoal, err = startOrigin(ctx, originBin, workDir)
	} else {
		shoal, err = startReference(ctx, registryBin, workDir, "Shoal", c.registryLog)
	}
	if shoal != nil {
		servers = append(servers, shoal)
	}
	if err != nil {
		return err
	}
	ref, err := startReference(ctx, registryBin, workDir, "registry:2", c.registryLog)
	if ref != nil {
		servers = append(servers, ref)
	}
	if err != nil {
		return err
	}

	rows, err := measureAll(ctx, c, shoal, ref)
	shoalName := "Shoal"
	if c.shoal == "reference" {
		shoalName = "Shoal(=ref)"
	}
	printHeader(c, shoalName, loadBefore)
	if tableErr := writeTable(os.Stdout, rows, shoalName, "registry:2", c.markdown); tableErr != nil {
		return fmt.Errorf("printing results: %w", tableErr)
	}
	return err
}

func printHeader(c config, shoalName, loadBefore string) {
	host, _ := os.Hostname()
	fmt.Printf("\nShoal benchmark  %s  host=%s  cpus=%d  %s/%s\n", time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	// Other jobs on the machine skew every figure; the load average says how busy it was.
	fmt.Printf("load average before the run: %s, after: %s\n", loadBefore, loadAvg())
	refBin := testenv.ReferenceRegistry
	if c.registryBin != "" {
		refBin = c.registryBin
	}
	fmt.Printf("Shoal column: %s   registry:2 column: %s (registry:2 image config, log level %s)\n", shoalName, refBin, c.registryLog)
	fmt.Printf("manifest rates: %d clients, median of %d rounds of %s (each after %s warm-up); blob %d MiB; push chunks %d MiB x %d pushes; %d sequential GETs; fan-out %d GETs\n\n",
		c.clients, c.rounds, c.duration, c.warmup, c.blobMiB, c.chunkMiB, c.pushReps, c.getReps, c.fanout)
}

// measureAll takes every figure on both servers, alternating servers figure by figure so slow
// drift of the shared machine (other jobs, page cache) hits both columns alike. A figure that
// fails on one server is recorded as an error and the run goes on to the next figure.
func measureAll(ctx context.Context, c config, shoal, ref *server) ([]row, error) {
	pair := []*server{shoal, ref}
	clients := make(map[*server]*registryClient, 2)
	for _, s := range pair {
		rc, err := newRegistryClient(s.URL(), newTransport(max(c.clients, c.fanout)))
		if err != nil {
			return nil, err
		}
		clients[s] = rc
	}
	const manifestRepo, blobRepo, tag = "bench/manifest", "bench/blob", "latest"

	manifestDigest := map[*server]string{}
	for _, s := range pair {
		d, err := clients[s].pushManifest(ctx, manifestRepo, tag)
		if err != nil {
			return nil, fmt.Errorf("setting up manifest on %s: %w", s.name, err)
		}
		manifestDigest[s] = d
	}
	if manifestDigest[shoal] != manifestDigest[ref] {
		return nil, fmt.Errorf("the same manifest got digests %s (Shoal) and %s (registry:2)", manifestDigest[shoal], manifestDigest[ref])
	}

	var rows []row
	// both measures one figure on each server rounds times, alternating which server goes first,
	// and keeps each server's median.
	bothRounds := func(rounds int, figure, unit string, t target, each func(s *server) (float64, error)) {
		r := row{figure: figure, unit: unit, target: t}
		values := map[*server][]float64{}
	measure:
		for round := range rounds {
			order := pair
			if round%2 == 1 {
				order = []*server{ref, shoal}
			}
			for _, s := range order {
				if ctx.Err() != nil {
					r.err = ctx.Err()
					break measure
				}
				v, err := each(s)
				if err != nil {
					r.err = fmt.Errorf("%s: %w", s.name, err)
					break measure
				}
				slog.Info("measured", "figure", figure, "server", s.name, "round", round+1, unit, formatValue(v))
				values[s] = append(values[s], v)
			}
		}
		if r.err == nil {
			r.shoal, r.ref = median(values[shoal]), median(values[ref])
		}
		rows = append(rows, r)
	}
	both := func(figure, unit string, t target, each func(s *server) (float64, error)) {
		bothRounds(1, figure, unit, t, each)
	}

	// Server CPU per request is reported beside each rate: unlike the rate it barely depends on
	// what else the shared machine is doing, or on the load generator's own CPU.
	var cpuRows []row
	// The load generator shares the two cores with the server; its own CPU per request shows
	// how much of a rate it could be limiting (one figure for all manifest measurements).
	clientPerReq := map[*server][]float64{}
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		for _, by := range []string{"tag", "digest"} {
			figure := fmt.Sprintf("manifest %s by %s, %d clients", method, by, c.clients)
			cpuPerReq := map[*server][]float64{}
			bothRounds(c.rounds, figure, "req/s", target{targetRatioAtLst, 2}, func(s *server) (float64, error) {
				ref := tag
				if by == "digest" {
					ref = manifestDigest[s]
				}
				u := clients[s].url("/v2/" + manifestRepo + "/manifests/" + ref)
				newReq := func(ctx context.Context) (*http.Request, error) {
					req, err := http.NewRequestWithContext(ctx, method, u, nil)
					if err == nil {
						req.Header.Set("Accept", manifestAccept)
					}
					return req, err
				}
				if _, _, err := requestRate(ctx, clients[s].http, c.clients, c.warmup, newReq); err != nil {
					return 0, fmt.Errorf("warm-up: %w", err)
				}
				cpuBefore, err := processCPU(s.PID())
				if err != nil {
					return 0, err
				}
				selfBefore, err := processCPU(os.Getpid())
				if err != nil {
					return 0, err
				}
				n, elapsed, err := requestRate(ctx, clients[s].http, c.clients, c.duration, newReq)
				if err != nil {
					return 0, err
				}
				cpuAfter, err := processCPU(s.PID())
				if err != nil {
					return 0, err
				}
				selfAfter, err := processCPU(os.Getpid())
				if err != nil {
					return 0, err
				}
				if n == 0 {
					return 0, fmt.Errorf("no request completed in %s", elapsed)
				}
				cpuPerReq[s] = append(cpuPerReq[s], float64((cpuAfter-cpuBefore).Microseconds())/float64(n))
				clientPerReq[s] = append(clientPerReq[s], float64((selfAfter-selfBefore).Microseconds())/float64(n))
				return float64(n) / elapsed.Seconds(), nil
			})
			if rows[len(rows)-1].err == nil {
				cpuRows = append(cpuRows, row{figure: fmt.Sprintf("manifest %s by %s: server CPU per request", method, by), unit: "µs",
					shoal: median(cpuPerReq[shoal]), ref: median(cpuPerReq[ref])})
			}
		}
	}
	rows = append(rows, cpuRows...)
	if len(clientPerReq[shoal]) > 0 && len(clientPerReq[ref]) > 0 {
		rows = append(rows, row{figure: "manifest requests: load generator CPU per request", unit: "µs",
			shoal: median(clientPerReq[shoal]), ref: median(clientPerReq[ref])})
	}

	blobSize, chunk := c.blobMiB*mib, c.chunkMiB*mib
	digests := make([]string, c.pushReps)
	for i := range digests {
		d, err := blobDigest(uint64(1000+i), blobSize)
		if err != nil {
			return rows, err
		}
		digests[i] = d
	}
	pushFigure := fmt.Sprintf("%d MiB chunked push, %d MiB PATCHes", c.blobMiB, c.chunkMiB)
	// Server CPU per GiB moved goes beside the throughput figures: it shows the cost of each
	// server's data path (sendfile or userland copies, hashing, fsync) even when other jobs on
	// the machine blur the throughput.
	var cpuGiBRows []row
	cpuPerGiB := map[*server]float64{}
	addCPURow := func(figure string) {
		if rows[len(rows)-1].err == nil {
			cpuGiBRows = append(cpuGiBRows, row{figure: figure + ": server CPU per GiB", unit: "ms", shoal: cpuPerGiB[shoal], ref: cpuPerGiB[ref]})
		}
	}
	gib := func(bytes int64) float64 { return float64(bytes) / (1 << 30) }

	both(pushFigure, "MiB/s", target{targetRatioAtLst, 1}, func(s *server) (float64, error) {
		var spent time.Duration
		cpu, err := serverCPU(s.PID(), func() error {
			for i, d := range digests {
				start := time.Now()
				if err := clients[s].pushChunked(ctx, blobRepo, uint64(1000+i), blobSize, chunk, d); err != nil {
					return err
				}
				spent += time.Since(start)
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		cpuPerGiB[s] = float64(cpu.Milliseconds()) / gib(blobSize*int64(len(digests)))
		return float64(blobSize*int64(len(digests))) / mib / spent.Seconds(), nil
	})
	if rows[len(rows)-1].err != nil {
		return rows, fmt.Errorf("no blob to GET: %w", rows[len(rows)-1].err)
	}
	addCPURow("chunked push")

	blob := digests[0]
	both(fmt.Sprintf("%d MiB blob GET, one client", c.blobMiB), "MiB/s", target{targetRatioAtLst, 1}, func(s *server) (float64, error) {
		if err := clients[s].verifyBlob(ctx, blobRepo, blob, blobSize); err != nil {
			return 0, fmt.Errorf("verifying pushed blob: %w", err)
		}
		start := time.Now()
		cpu, err := serverCPU(s.PID(), func() error {
			for range c.getReps {
				if _, err := clients[s].getBlob(ctx, blobRepo, blob); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		elapsed := time.Since(start)
		cpuPerGiB[s] = float64(cpu.Milliseconds()) / gib(blobSize*int64(c.getReps))
		return float64(blobSize*int64(c.getReps)) / mib / elapsed.Seconds(), nil
	})
	addCPURow("blob GET, one client")

	// The fan-out yields two figures per server from one run: peak RSS and aggregate throughput.
	fanThroughput := map[*server]float64{}
	fanHWM := map[*server]float64{}
	both(fmt.Sprintf("%d concurrent GETs of it: peak server RSS", c.fanout), "MiB", target{targetBelow, c.rssTargetMiB}, func(s *server) (float64, error) {
		sampler := startRSSSampler(s.PID(), 10*time.Millisecond)
		start := time.Now()
		cpu, firstErr := serverCPU(s.PID(), func() error {
			errs := make(chan error, c.fanout)
			for range c.fanout {
				go func() {
					_, err := clients[s].getBlob(ctx, blobRepo, blob)
					errs <- err
				}()
			}
			var firstErr error
			for range c.fanout {
				if err := <-errs; err != nil && firstErr == nil {
					firstErr = err
				}
			}
			return firstErr
		})
		elapsed := time.Since(start)
		peak, sampleErr := sampler.finish()
		if firstErr != nil {
			return 0, firstErr
		}
		if sampleErr != nil {
			return 0, sampleErr
		}
		st, err := readProcStatus(s.PID())
		if err != nil {
			return 0, err
		}
		fanThroughput[s] = float64(blobSize*int64(c.fanout)) / mib / elapsed.Seconds()
		fanHWM[s] = float64(st.hwm) / mib
		cpuPerGiB[s] = float64(cpu.Milliseconds()) / gib(blobSize*int64(c.fanout))
		return float64(peak) / mib, nil
	})
	if rows[len(rows)-1].err == nil {
		rows = append(rows,
			row{figure: fmt.Sprintf("%d concurrent GETs of it: aggregate", c.fanout), unit: "MiB/s", shoal: fanThroughput[shoal], ref: fanThroughput[ref]},
			row{figure: "server VmHWM (lifetime peak RSS) after all figures", unit: "MiB", shoal: fanHWM[shoal], ref: fanHWM[ref]},
		)
	}
	addCPURow(fmt.Sprintf("%d concurrent GETs", c.fanout))
	rows = append(rows, cpuGiBRows...)
	for _, r := range rows {
		if r.err != nil {
			return rows, fmt.Errorf("%d figure(s) could not be measured", countErrors(rows))
		}
	}
	return rows, nil
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func countErrors(rows []row) int {
	n := 0
	for _, r := range rows {
		if r.err != nil {
			n++
		}
	}
	return n
}

// loadAvg returns the 1, 5 and 15 minute load averages from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}
