// Command authbench measures what access control (issue 9) costs, on real
// processes built from this module, and prints one table per benchmark with
// the goals as PASS/MISS (a MISS is a result, not an error):
//
//   - origin: manifest GET by tag with 64 clients against two origins, one
//     with --auth-config (bcrypt htpasswd, the mission's rules) and one
//     open; with auth on, each client holds a bearer token fetched once from
//     /auth/token (and, as a second row, sends Basic credentials with every
//     request). p50 latency and requests per second, rounds alternating the
//     order, medians; goal: at most 5% slower than auth off;
//   - agent: a storm of 1,000 blob requests from one client (32 at a time,
//     then one at a time) through a peer-agent in front of the auth origin,
//     spread over a few authTTL windows; the origin's blob HEADs counted from
//     its /metrics; goal: at most one authorization call per (credential,
//     repository) per authTTL;
//   - P2P plane: the CPU that capability and metainfo signature checks cost
//     per GiB moved. Neither the agent nor the seeder can turn the checks off,
//     so each check is timed in a loop in this program and multiplied by the
//     checks a real cold pull of a 1 GiB layer made (counted from the
//     processes' metrics), beside that pull's measured CPU per GiB.
//
// Run it from anywhere in the repository (docs/benchmarks.md, "Access
// control", has the method and today's figures):
//
//	go run ./e2e/authbench              # = make bench-auth, about 4 minutes on 2 cores
//	go run ./e2e/authbench -quick       # smoke run, about a minute
//	go run ./e2e/authbench -only agent  # one benchmark: origin, agent or p2p
//
// The exit status is non-zero only when a figure could not be measured.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/e2e/procstat"
	"github.com/shoal-dev/shoal/e2e/testenv"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// config holds every knob of a run; the defaults are what issue 9 asks for.
type config struct {
	clients  int           // concurrent manifest clients
	duration time.Duration // length of one manifest rate measurement
	warmup   time.Duration // unmeasured load before each measurement
	rounds   int           // rounds per origin configuration, order rotating; medians count

	stormRequests    int           // blob requests per storm
	stormConcurrency int           // requests at a time in the concurrent storm
	stormWindows     int           // authTTL windows a storm is spread over
	authTTL          time.Duration // the agent's mirror.authTTL
	layers           int           // layers of the image of the many-layer storm

	pullSize  int64         // layer pulled cold through the agent for the P2P figures
	loopTime  time.Duration // how long each check is timed in its loop
	markdown  bool          // print the tables as Markdown
	only      string        // origin, agent or p2p; empty runs all
	workDir   string        // logs, configs and storage; empty makes a temp dir
	keepData  bool          // keep storage and caches after the run
	originBin string        // prebuilt binaries; empty builds them
	agentBin  string
	trackBin  string
}

func (c config) runs(part string) bool { return c.only == "" || c.only == part }

func parseFlags() config {
	var c config
	quick := flag.Bool("quick", false, "smoke run: one round of 1 s, storms over 1 s windows, a 64 MiB pull (explicit flags still win)")
	flag.IntVar(&c.clients, "clients", 64, "concurrent clients of the manifest GET figures")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "length of one manifest rate measurement")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured load before each manifest measurement")
	flag.IntVar(&c.rounds, "rounds", 5, "rounds per configuration (auth off, bearer, Basic), the order rotating each round; medians count")
	flag.IntVar(&c.stormRequests, "storm-requests", 1000, "blob requests per storm through the agent")
	flag.IntVar(&c.stormConcurrency, "storm-concurrency", 32, "requests at a time in the concurrent storms")
	flag.IntVar(&c.stormWindows, "storm-windows", 3, "authTTL windows each storm is spread over")
	flag.DurationVar(&c.authTTL, "auth-ttl", 10*time.Second, "the agent's mirror.authTTL (its default is 10s)")
	flag.IntVar(&c.layers, "layers", 8, "layers of the image in the many-layer storm")
	pull := flag.Int64("pull-mib", 1024, "size in MiB of the layer pulled cold through the agent for the P2P figures")
	flag.DurationVar(&c.loopTime, "loop-time", time.Second, "how long each P2P check is timed in its loop")
	flag.BoolVar(&c.markdown, "markdown", false, "print the tables as Markdown (as pasted into docs/benchmarks.md)")
	flag.StringVar(&c.only, "only", "", "run one benchmark: origin, agent or p2p (default all)")
	flag.StringVar(&c.workDir, "workdir", "", "directory for logs, configs and storage (default: a new temp dir)")
	flag.BoolVar(&c.keepData, "keep-data", false, "keep storage and caches after the run (logs are always kept)")
	flag.StringVar(&c.originBin, "origin-bin", "", "use this origin binary instead of building cmd/origin")
	flag.StringVar(&c.agentBin, "agent-bin", "", "use this peer-agent binary instead of building cmd/peer-agent")
	flag.StringVar(&c.trackBin, "tracker-bin", "", "use this tracker binary instead of building cmd/tracker")
	flag.Parse()
	c.pullSize = *pull * mib
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, apply := range map[string]func(){
			"duration": func() { c.duration = time.Second },
			"warmup":   func() { c.warmup = 300 * time.Millisecond },
			"rounds":   func() { c.rounds = 1 },
			"auth-ttl": func() { c.authTTL = time.Second },
			"pull-mib": func() { c.pullSize = 64 * mib },
			"loop-time": func() {
				c.loopTime = 200 * time.Millisecond
			},
		} {
			if !set[name] {
				apply()
			}
		}
	}
	return c
}

func (c config) validate() error {
	switch {
	case c.only != "" && c.only != "origin" && c.only != "agent" && c.only != "p2p":
		return fmt.Errorf("-only must be origin, agent or p2p, not %q", c.only)
	case c.clients < 1 || c.rounds < 1 || c.stormRequests < 1 || c.stormConcurrency < 1 || c.stormWindows < 1 || c.layers < 1:
		return errors.New("-clients, -rounds, -storm-requests, -storm-concurrency, -storm-windows and -layers must be at least 1")
	case c.duration <= 0 || c.authTTL <= 0 || c.loopTime <= 0:
		return errors.New("-duration, -auth-ttl and -loop-time must be positive")
	case c.pullSize < mib:
		return errors.New("-pull-mib must be at least 1")
	}
	return nil
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

func run(ctx context.Context, c config) (err error) {
	if err := c.validate(); err != nil {
		return err
	}
	loadStart := procstat.LoadAvg()
	started := time.Now()
	workDir := c.workDir
	if workDir == "" {
		if workDir, err = os.MkdirTemp("", "shoal-authbench-"); err != nil {
			return fmt.Errorf("creating work dir: %w", err)
		}
	}
	if workDir, err = filepath.Abs(workDir); err != nil {
		return fmt.Errorf("resolving work dir: %w", err)
	}
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return fmt.Errorf("creating work dir: %w", err)
	}
	slog.Info("work dir (logs and configs are kept here)", "dir", workDir)

	bins, err := buildBinaries(ctx, c)
	if err != nil {
		return err
	}
	env := &cluster{c: c, bins: bins, dir: workDir}
	defer env.stopAll()

	host, _ := os.Hostname()
	fmt.Printf("Shoal access-control benchmark  %s  host=%s  cpus=%d  %s/%s\n",
		started.UTC().Format(time.RFC3339), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("load average at the start: %s%s\n", loadStart, busyNote(loadStart))

	var errs []error
	if c.runs("origin") {
		errs = append(errs, originBench(ctx, env))
	}
	if c.runs("agent") || c.runs("p2p") {
		errs = append(errs, agentAndP2P(ctx, env))
	}
	loadEnd := procstat.LoadAvg()
	fmt.Printf("\nload average at the end: %s%s (run took %s)\n", loadEnd, busyNote(loadEnd), time.Since(started).Round(time.Second))
	fmt.Printf("logs: %s\n", workDir)
	return errors.Join(errs...)
}

// agentAndP2P runs the agent and P2P benchmarks on one cluster: the auth
// origin with its seeder, a tracker and one agent.
func agentAndP2P(ctx context.Context, env *cluster) error {
	if err := env.startP2P(ctx); err != nil {
		return err
	}
	var errs []error
	if env.c.runs("agent") {
		errs = append(errs, stormBench(ctx, env))
	}
	if env.c.runs("p2p") {
		errs = append(errs, p2pBench(ctx, env))
	}
	return errors.Join(errs...)
}

func buildBinaries(ctx context.Context, c config) (binaries, error) {
	b := binaries{origin: c.originBin, agent: c.agentBin, tracker: c.trackBin}
	ws, err := testenv.FindWorkspace()
	if err != nil {
		return b, err
	}
	need := map[string]*string{"origin": &b.origin}
	if c.runs("agent") || c.runs("p2p") {
		need["peer-agent"], need["tracker"] = &b.agent, &b.tracker
	}
	for name, p := range need {
		if *p != "" {
			continue
		}
		slog.Info("building", "command", name)
		if *p, err = ws.Build(ctx, name, testenv.BuildOptions{}); err != nil {
			return b, err
		}
	}
	return b, nil
}

// busyNote flags a load above what the machine's cores absorb: other jobs
// then share the cores with the processes measured, and the rates and
// latencies (not the counts) are noisy.
func busyNote(load string) string {
	f := strings.Fields(load)
	if len(f) == 0 {
		return ""
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v <= 3 {
		return ""
	}
	return fmt.Sprintf("  (busy machine: above 3 on %d cores, rates and latencies are noisy)", runtime.NumCPU())
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
