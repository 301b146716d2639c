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
// on error or interrupt too. Run it from anywhere in the repository (docs/benchmarks.md has the
// method and the figures measured so far):
//
//	go run ./e2e/bench            # full run, about 3.5 minutes on 2 cores
//	go run ./e2e/bench -quick     # 32 MiB blob, one 1 s round per rate: a smoke run of ~20 s
//
// With -against limits-off the second column is the origin again with its deadlines and caps
// turned off, and every rate's target is at least 0.95x: what the hardening costs.
//
// The exit status is non-zero only when a measurement could not be taken; a MISS is a figure,
// not a failure.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/e2e/procstat"
	"github.com/shoal-dev/shoal/e2e/testenv"
)

const mib = 1 << 20

// config holds every knob of a run; defaults are the figures issue 2 asks for.
type config struct {
	shoal        string        // "origin" (cmd/origin) or "reference" (stand-in, ratios ~1)
	against      string        // the second column: "registry" (registry:2) or "limits-off" (the origin without its deadlines and caps)
	originBin    string        // prebuilt origin binary; empty builds cmd/origin
	registryBin  string        // prebuilt reference registry; empty builds it
	registryLog  string        // reference registry log level (registry:2 ships "info")
	clients      int           // concurrent clients for the manifest request rates
	duration     time.Duration // length of each request-rate measurement
	warmup       time.Duration // unmeasured run before each request-rate measurement
	rounds       int           // request-rate rounds per server, alternating order; the median is reported
	slice        time.Duration // with it, a round's request-rate measurement alternates the servers in slices this long
	blobMiB      int64         // size of the pushed and pulled blob
	chunkMiB     int64         // PATCH chunk size of the chunked push
	pushReps     int           // chunked pushes per server (distinct blobs), alternating servers; the median counts
	getReps      int           // timed GETs of the blob per server, alternating servers; the median counts
	fanout       int           // concurrent GETs during the RSS measurement
	rssTargetMiB float64       // Shoal's RSS ceiling during the fan-out
	workDir      string        // where logs, configs and storage go; empty makes a temp dir
	keepData     bool          // keep storage dirs after the run
	markdown     bool          // print the table as Markdown
	only         string        // "manifests" or "blobs" limits the run to one group of figures
}

// runs tells whether the figure group ("manifests" or "blobs") is part of this run.
func (c config) runs(group string) bool { return c.only == "" || c.only == group }

func parseFlags() config {
	var c config
	quick := flag.Bool("quick", false, "smoke run: 32 MiB blob, one round of 1 s per rate, 3 pushes and GETs (explicit flags still win)")
	flag.StringVar(&c.shoal, "shoal", "origin", `what runs in the Shoal column: "origin" (cmd/origin) or "reference" (the reference registry again, to check the harness; ratios ~1)`)
	flag.StringVar(&c.against, "against", "registry", `the second column: "registry" (registry:2) or "limits-off" (the origin with its deadlines and caps turned off; the first column then counts loopback clients too, and the target of every rate is at least 0.95x)`)
	flag.StringVar(&c.originBin, "origin-bin", "", "use this origin binary instead of building cmd/origin")
	flag.StringVar(&c.registryBin, "registry-bin", "", "use this reference registry binary instead of building it")
	flag.StringVar(&c.registryLog, "registry-log-level", "info", "reference registry log level; info is what the registry:2 image runs with")
	flag.IntVar(&c.clients, "clients", 64, "concurrent clients for manifest requests per second")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "length of each requests-per-second measurement")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured load before each requests-per-second measurement")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds of each requests-per-second figure, servers alternating first; the median counts (7 with -against limits-off, whose ratios are near 1)")
	flag.DurationVar(&c.slice, "slice", 0, "take turns within each round: the servers alternate in slices this long until each has had -duration (0: one block each; 500ms with -against limits-off)")
	flag.Int64Var(&c.blobMiB, "blob-mib", 256, "blob size in MiB for push and GET figures")
	flag.Int64Var(&c.chunkMiB, "chunk-mib", 8, "PATCH chunk size in MiB for the chunked push")
	flag.IntVar(&c.pushReps, "push-reps", 5, "chunked pushes per server, each a distinct blob, alternating servers; the median counts")
	flag.IntVar(&c.getReps, "get-reps", 5, "timed GETs of the blob per server, alternating servers; the median counts")
	flag.IntVar(&c.fanout, "fanout", 100, "concurrent GETs of the blob while sampling the server RSS")
	flag.Float64Var(&c.rssTargetMiB, "rss-target-mib", 200, "Shoal's peak RSS ceiling during the fan-out, MiB")
	flag.StringVar(&c.workDir, "workdir", "", "directory for logs, configs and storage (default: a new temp dir)")
	flag.BoolVar(&c.keepData, "keep-data", false, "keep the servers' storage dirs after the run (logs are always kept)")
	flag.StringVar(&c.only, "only", "", `run one group of figures: "manifests" (request rates) or "blobs" (push, GET, fan-out RSS)`)
	flag.BoolVar(&c.markdown, "markdown", false, "print the result table as Markdown")
	flag.Parse()

	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.against == "limits-off" {
		// Its target is a ratio of 0.95 between two servers that differ by a
		// few percent at most, and one round's ratio moves by ±0.1 on a quiet
		// machine when each server is measured in one 5 s block: the load
		// drifts between the blocks. So: more rounds, the servers taking
		// turns in half-second slices within a round, and more pushes and
		// GETs, so that drift hits both columns alike and one disturbed
		// round moves the median less.
		limitsOffDefaults := map[string]func(){
			"rounds":    func() { c.rounds = 7 },
			"slice":     func() { c.slice = 500 * time.Millisecond },
			"push-reps": func() { c.pushReps = 7 },
			"get-reps":  func() { c.getReps = 11 },
		}
		for name, apply := range limitsOffDefaults {
			if !set[name] {
				apply()
			}
		}
	}
	if *quick {
		quickDefaults := map[string]func(){
			"duration":  func() { c.duration = time.Second },
			"warmup":    func() { c.warmup = 300 * time.Millisecond },
			"blob-mib":  func() { c.blobMiB = 32 },
			"push-reps": func() { c.pushReps = 3 },
			"get-reps":  func() { c.getReps = 3 },
			"rounds":    func() { c.rounds = 1 },
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
	case c.only != "" && c.only != "manifests" && c.only != "blobs":
		return fmt.Errorf("-only must be manifests or blobs, not %q", c.only)
	case c.shoal != "origin" && c.shoal != "reference":
		return fmt.Errorf("-shoal must be origin or reference, not %q", c.shoal)
	case c.against != "registry" && c.against != "limits-off":
		return fmt.Errorf("-against must be registry or limits-off, not %q", c.against)
	case c.against == "limits-off" && c.shoal != "origin":
		return fmt.Errorf("-against limits-off compares the origin with itself: -shoal must be origin")
	case c.clients < 1 || c.fanout < 1 || c.pushReps < 1 || c.getReps < 1 || c.rounds < 1:
		return fmt.Errorf("-clients, -fanout, -push-reps, -get-reps and -rounds must be at least 1")
	case c.blobMiB < 1 || c.chunkMiB < 1:
		return fmt.Errorf("-blob-mib and -chunk-mib must be at least 1")
	case c.duration <= 0:
		return fmt.Errorf("-duration must be positive")
	case c.slice < 0:
		return fmt.Errorf("-slice must not be negative")
	}
	return nil
}

func run(ctx context.Context, c config) (err error) {
	if err := c.validate(); err != nil {
		return err
	}
	loadBefore := procstat.LoadAvg()
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
	if (c.shoal == "origin" || c.against == "limits-off") && originBin == "" {
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
	switch {
	case c.against == "limits-off":
		shoal, err = startOrigin(ctx, originBin, workDir, "Shoal", limitsOnConfig)
	case c.shoal == "origin":
		shoal, err = startOrigin(ctx, originBin, workDir, "Shoal", "")
	default:
		shoal, err = startReference(ctx, registryBin, workDir, "Shoal", c.registryLog)
	}
	if shoal != nil {
		servers = append(servers, shoal)
	}
	if err != nil {
		return err
	}
	var ref *server
	if c.against == "limits-off" {
		ref, err = startOrigin(ctx, originBin, workDir, limitsOffName, limitsOffConfig)
	} else {
		ref, err = startReference(ctx, registryBin, workDir, "registry:2", c.registryLog)
	}
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
	if tableErr := writeTable(os.Stdout, rows, shoalName, ref.name, c.markdown); tableErr != nil {
		return fmt.Errorf("printing results: %w", tableErr)
	}
	return err
}

func printHeader(c config, shoalName, loadBefore string) {
	host, _ := os.Hostname()
	fmt.Printf("\nShoal benchmark  %s  host=%s  cpus=%d  %s/%s\n", time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	// Other jobs on the machine skew every figure; the load average says how busy it was.
	fmt.Printf("load average before the run: %s, after: %s\n", loadBefore, procstat.LoadAvg())
	refBin := testenv.ReferenceRegistry
	if c.registryBin != "" {
		refBin = c.registryBin
	}
	if c.against == "limits-off" {
		fmt.Printf("Shoal column: the origin's defaults, loopback clients counted by the connection cap   %s column: readHeaderTimeout, idleTimeout, bodyTimeout, storageTimeout 0; maxPerClient, maxUploadSessionsPerClient 0\n", limitsOffName)
	} else {
		fmt.Printf("Shoal column: %s   registry:2 column: %s (registry:2 image config, log level %s)\n", shoalName, refBin, c.registryLog)
	}
	turns := "each server in one block"
	if c.slice > 0 && c.slice < c.duration {
		turns = fmt.Sprintf("the servers taking turns in %s slices", c.slice)
	}
	fmt.Printf("manifest rates: %d clients, %d round(s) of %s per server, %s (each after %s warm-up); blob %d MiB; median of %d pushes in %d MiB chunks; median of %d GETs; fan-out %d GETs\n\n",
		c.clients, c.rounds, c.duration, turns, c.warmup, c.blobMiB, c.pushReps, c.chunkMiB, c.getReps, c.fanout)
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
