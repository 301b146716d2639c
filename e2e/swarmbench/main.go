// Command swarmbench measures Shoal's P2P distribution (issue 4): N
// peer-agents pulling one layer at the same moment through their mirror
// API, against the same N hosts pulling it straight from the origin; one
// agent's cold and warm pulls against the origin's own GET; and the
// tracker's announce rate and memory per entry. It prints figures with the
// goals of issue 4 and of issue 10 (the piece data path: 16 hosts, 64 MiB,
// 200 Mbit/s; 50 hosts, 256 MiB, 100 Mbit/s; one agent's CPU per GiB) as
// PASS/MISS; a MISS is a result, not an error.
//
//	go run ./e2e/swarmbench                  # netns mode if root, else loopback
//	go run ./e2e/swarmbench -n 16 -size 64MiB -rate 200mbit -only swarm
//	go run ./e2e/swarmbench -loopback -n 10 -size 32MiB -single-size 128MiB
//	sudo go run ./e2e/swarmbench -netns -n 50 -size 256MiB -rate 100mbit
//
// In -netns mode every host (each agent, and the origin with the tracker)
// gets its own network namespace (shoalbench-*) behind a veth pair in the
// bridge shoalbench0 on 10.213.0.0/16, shaped with tc to -rate both ways.
// Everything it creates is removed on exit, on error and on Ctrl-C, and
// leftovers of a crashed run are removed at start.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

type config struct {
	netns, loopback bool
	n               int
	size            int64
	rate            string
	rateBytes       float64 // bytes per second
	pullTimeout     time.Duration
	directTimeout   time.Duration
	singleSize      int64
	trackerDuration time.Duration
	only            string
	agentConfig     string
	originConfig    string
	keep            bool
	originBin       string
	agentBin        string
}

func main() {
	var (
		pullURL     = flag.String("pull", "", "internal: run as a pull client inside a namespace")
		pullHost    = flag.Int("pull-host", 0, "internal")
		pullAt      = flag.Int64("pull-at", 0, "internal")
		pullTimeout = flag.Duration("pull-timeout", time.Minute, "internal")
	)
	var c config
	size, single := byteSize(256<<20), byteSize(1<<30)
	flag.BoolVar(&c.netns, "netns", false, "one network namespace per host, links shaped to -rate (needs root; the default when root)")
	flag.BoolVar(&c.loopback, "loopback", false, "everything on 127.0.0.1, no shaping (the default when not root)")
	flag.IntVar(&c.n, "n", 50, "agents")
	flag.Var(&size, "size", "layer size, e.g. 256MiB, 32MiB")
	flag.StringVar(&c.rate, "rate", "100mbit", "link rate B of every host in -netns mode (tc units: kbit, mbit, gbit)")
	flag.DurationVar(&c.pullTimeout, "swarm-timeout", 10*time.Minute, "bound on the P2P pulls")
	flag.DurationVar(&c.directTimeout, "direct-timeout", 3*time.Minute, "bound on the direct pulls; unfinished ones are reported with the bytes they got and a projected wall time")
	flag.Var(&single, "single-size", "layer size of the single-agent figures")
	flag.DurationVar(&c.trackerDuration, "tracker-duration", 5*time.Second, "duration of the timed tracker announce load")
	flag.StringVar(&c.only, "only", "", "run one part: swarm, single or tracker (default all)")
	flag.StringVar(&c.originConfig, "origin-config", "", "origin YAML config for the swarm (default: production defaults); the bench's flags override its addresses")
	flag.StringVar(&c.agentConfig, "agent-config", "", "peer-agent YAML config for the swarm (default: production defaults, shutdownGrace 5s)")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (storage, caches, logs)")
	flag.StringVar(&c.originBin, "origin-bin", "", "origin binary to run instead of building cmd/origin (to compare two builds of the origin on one setup)")
	flag.StringVar(&c.agentBin, "agent-bin", "", "peer-agent binary to run instead of building cmd/peer-agent (as -origin-bin)")
	flag.Parse()
	if *pullURL != "" {
		pullMain(*pullURL, *pullHost, *pullAt, *pullTimeout)
		return
	}
	c.size, c.singleSize = int64(size), int64(single)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err := runBench(c); err != nil {
		fmt.Fprintln(os.Stderr, "swarmbench:", err)
		os.Exit(1)
	}
}

func runBench(c config) error {
	root := os.Geteuid() == 0
	switch {
	case c.netns && c.loopback:
		return errors.New("-netns and -loopback exclude each other")
	case c.netns && !root:
		return errors.New("-netns needs root (network namespaces, veth pairs, a bridge and tc); run with sudo or use -loopback")
	case !c.netns && !c.loopback:
		c.netns = root
	}
	if c.netns {
		r, err := parseRate(c.rate)
		if err != nil {
			return err
		}
		c.rateBytes = r
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ws, err := testenv.FindWorkspace()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "shoal-swarmbench-")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	defer func() {
		if c.keep {
			fmt.Printf("\nwork directory kept: %s\n", dir)
			return
		}
		// Logs stay for a post-mortem; the layer copies go.
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Name() != "logs" {
				_ = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
		fmt.Printf("\nlogs: %s/logs\n", dir)
	}()

	fmt.Printf("swarmbench %s, %s, %d cores, load average %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), mode(c), numCPU(), loadavg())
	var bins binaries
	for name, p := range map[string]*string{"origin": &bins.origin, "tracker": &bins.tracker, "peer-agent": &bins.agent} {
		if *p, err = ws.Build(ctx, name, testenv.BuildOptions{}); err != nil {
			return err
		}
	}
	for _, b := range []struct {
		name, flag string
		bin        *string
	}{{"origin", c.originBin, &bins.origin}, {"peer-agent", c.agentBin, &bins.agent}} {
		if b.flag == "" {
			continue
		}
		if *b.bin, err = filepath.Abs(b.flag); err != nil {
			return err
		}
		fmt.Printf("%s binary: %s\n", b.name, *b.bin)
	}
	var errs []error
	if c.only == "" || c.only == "swarm" {
		errs = append(errs, runSwarm(ctx, c, bins, dir))
	}
	if c.only == "" || c.only == "single" {
		errs = append(errs, runSingle(ctx, c, bins, dir))
	}
	if c.only == "" || c.only == "tracker" {
		errs = append(errs, runTracker(ctx, c, bins, dir))
	}
	fmt.Printf("\nload average at the end: %s\n", loadavg())
	return errors.Join(errs...)
}

func mode(c config) string {
	if c.netns {
		return "netns mode, links shaped to " + c.rate
	}
	return "loopback mode, no shaping"
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\nprocessor") + 1
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// parseRate turns tc's "100mbit" into bytes per second.
func parseRate(s string) (float64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(strings.ToLower(s), u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				return 0, fmt.Errorf("-rate %q: want e.g. 100mbit", s)
			}
			return f * u.mult / 8, nil
		}
	}
	return 0, fmt.Errorf("-rate %q: want a number with kbit, mbit or gbit", s)
}

// byteSize is a flag taking 256MiB, 1GiB, 64MB or plain bytes.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("size %q: want e.g. 256MiB", s)
			}
			*b = byteSize(n * u.mult)
			return nil
		}
	}
	return fmt.Errorf("size %q: want e.g. 256MiB", s)
}
