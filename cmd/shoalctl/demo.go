package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/internal/promscrape"
	"github.com/shoal-dev/shoal/pkg/peer/agent"
)

// demoOptions are `shoalctl demo`'s flags.
type demoOptions struct {
	// agents is how many peer-agents pull the image at once.
	agents int
	// size is the image's layer bytes in all; layers how many layers.
	size   int64
	layers int
	// binDir holds origin, tracker and peer-agent; empty: build them.
	binDir string
	// keep leaves the working directory (logs, storage) in place.
	keep bool
}

// demoStopGrace is how long a child may take to stop after SIGTERM.
const demoStopGrace = 10 * time.Second

// runDemo runs `shoalctl demo`: a whole Shoal on loopback (an origin with
// its seeder, a tracker, opts.agents peer-agents) in a temporary
// directory, a generated image pushed to the origin and pulled through
// every agent at once, and what the origin sent compared with direct
// pulls. It stops every process it started, also on Ctrl-C.
func runDemo(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var opts demoOptions
	fs.IntVar(&opts.agents, "agents", 4, "peer-agents pulling the image at once")
	size := agent.ByteSize(128 << 20)
	fs.Var(&size, "size", "the image's layer bytes in all, e.g. 64MiB")
	fs.IntVar(&opts.layers, "layers", 4, "layers in the image")
	fs.StringVar(&opts.binDir, "bin-dir", "", "directory with origin, tracker and peer-agent binaries (default: go build them from the checkout into .cache/bin)")
	fs.BoolVar(&opts.keep, "keep", false, "keep the working directory (logs, storage, caches) instead of removing it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts.size = int64(size)
	switch {
	case opts.agents < 1:
		return usageError{"demo: --agents must be at least 1"}
	case opts.layers < 1 || opts.size < int64(opts.layers):
		return usageError{"demo: --layers must be at least 1, and --size at least a byte per layer"}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "shoal-demo-")
	if err != nil {
		return fmt.Errorf("demo: creating a working directory: %w", err)
	}
	var ps procs
	err = demo(ctx, opts, dir, &ps, out)
	if err != nil && ctx.Err() != nil {
		fmt.Fprintln(out, "\ninterrupted")
		err = errInterrupted
	}
	stopped, unclean := ps.stopAll(demoStopGrace)
	if len(stopped) > 0 {
		fmt.Fprintf(out, "stopped %d processes (pids %s)\n", len(stopped), joinInts(stopped))
	}
	for _, c := range unclean {
		fmt.Fprintf(out, "%s (pid %d) did not stop cleanly: %v; see %s\n", c.name, c.pid(), c.err, c.logPath)
	}
	// A failure leaves the logs for a look; an interruption or success
	// tidies up.
	if opts.keep || (err != nil && err != errInterrupted) || len(unclean) > 0 {
		fmt.Fprintf(out, "logs and data are in %s\n", dir)
	} else if rerr := os.RemoveAll(dir); rerr != nil {
		fmt.Fprintf(out, "removing %s: %v\n", dir, rerr)
	}
	return err
}

// errInterrupted makes shoalctl exit 130, as a shell does for a Ctrl-C,
// without a message: the demo said it was interrupted.
var errInterrupted = errors.New("interrupted")

func demo(ctx context.Context, opts demoOptions, dir string, ps *procs, out io.Writer) error {
	bins, err := findBinaries(ctx, opts.binDir, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "starting an origin, a tracker and %d peer-agents on 127.0.0.1 (working directory %s)\n", opts.agents, dir)
	addrs, err := freeAddrs(6 + 2*opts.agents) // tracker 2, origin 4, agents 2 each
	if err != nil {
		return err
	}
	take := func() string { a := addrs[0]; addrs = addrs[1:]; return a }
	trGRPC, trHTTP := take(), take()
	tr, err := ps.start(ctx, "tracker", bins["tracker"], filepath.Join(dir, "tracker.log"), "http://"+trHTTP+"/readyz",
		"--listen", trGRPC, "--metrics-listen", trHTTP)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  tracker     pid %-7d gRPC %s, http://%s/metrics\n", tr.pid(), trGRPC, trHTTP)

	oAPI, oAdmin, oSeeder, oCluster := take(), take(), take(), take()
	o, err := ps.start(ctx, "origin", bins["origin"], filepath.Join(dir, "origin.log"), "http://"+oAPI+"/readyz",
		"--listen", oAPI, "--admin-listen", oAdmin, "--storage", "file://"+filepath.Join(dir, "storage"),
		"--seeder-listen", oSeeder, "--cluster-bind", oCluster, "--cluster-name", "origin-1",
		"--cache-dir", filepath.Join(dir, "origin-cache"), "--tracker", trGRPC)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  origin      pid %-7d http://%s (registry API), admin http://%s, seeder %s\n", o.pid(), oAPI, oAdmin, oSeeder)

	agentURLs := make([]string, opts.agents)
	names := make([]string, opts.agents)
	for i := range opts.agents {
		names[i] = fmt.Sprintf("agent-%d", i+1)
		listen, peer := take(), take()
		a, err := ps.start(ctx, names[i], bins["peer-agent"], filepath.Join(dir, names[i]+".log"), "http://"+listen+"/readyz",
			"--listen", listen, "--peer-listen", peer, "--peer-id", names[i],
			"--origin", "http://"+oAPI, "--tracker", trGRPC,
			"--cache-dir", filepath.Join(dir, names[i]+"-cache"))
		if err != nil {
			return err
		}
		agentURLs[i] = listen
		fmt.Fprintf(out, "  %-11s pid %-7d http://%s (registry mirror), peers %s\n", names[i], a.pid(), listen, peer)
	}

	fmt.Fprintf(out, "generating an image of %d layers, %s in all\n", opts.layers, mib(opts.size))
	img, err := demoImage(ctx, opts.size, opts.layers)
	if err != nil {
		return err
	}
	total, err := imageBytes(img)
	if err != nil {
		return err
	}
	const repo = "demo/app:v1"
	if err := pushImage(ctx, oAPI+"/"+repo, img); err != nil {
		return err
	}
	fmt.Fprintf(out, "pushed %s/%s\n", oAPI, repo)

	before, err := originEgress(ctx, "http://"+oAPI+"/metrics")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "pulling it through all %d agents at once\n", opts.agents)
	got := make([]*atomic.Int64, opts.agents)
	errs := make([]error, opts.agents)
	finished := make(chan int, opts.agents)
	start := time.Now()
	for i := range got {
		got[i] = new(atomic.Int64)
		go func() {
			errs[i] = pullImage(ctx, agentURLs[i]+"/"+repo, got[i])
			finished <- i
		}()
	}
	layerBytes := total
	if m, err := img.Manifest(); err == nil {
		layerBytes -= m.Config.Size
	}
	done := make(chan struct{})
	bars := newProgress(out, names, got, layerBytes)
	drawn := make(chan struct{})
	go func() { bars.run(done); close(drawn) }()
	took := make([]time.Duration, opts.agents)
	for range opts.agents {
		i := <-finished
		took[i] = time.Since(start)
	}
	close(done)
	<-drawn
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("%s: %w", names[i], err)
		}
	}
	after, err := originEgress(ctx, "http://"+oAPI+"/metrics")
	if err != nil {
		return err
	}
	fromPeers, fromOrigin, err := agentsReceived(ctx, agentURLs)
	if err != nil {
		return err
	}
	slowest := time.Duration(0)
	for _, d := range took {
		slowest = max(slowest, d)
	}
	sent := after - before
	direct := int64(opts.agents) * total
	fmt.Fprintf(out, "\n%d pulls of %s done in %s, every layer checked against its digest\n", opts.agents, mib(total), slowest.Round(100*time.Millisecond))
	fmt.Fprintf(out, "origin egress: %s = %.2f copies of the image (direct pulls from the origin: %s = %d copies)\n",
		mib(int64(sent)), sent/float64(total), mib(direct), opts.agents)
	fmt.Fprintf(out, "the agents received %s from each other and %s from the origin's seeder\n", mib(int64(fromPeers)), mib(int64(fromOrigin)))
	return nil
}

// originEgress is the blob bytes the origin has sent: by its seeder (P2P)
// and as registry API blob responses.
func originEgress(ctx context.Context, url string) (float64, error) {
	m, err := promscrape.Scrape(ctx, nil, url)
	if err != nil {
		return 0, err
	}
	return m.Sum("shoal_origin_seeder_egress_bytes_total") + m.Sum("shoal_origin_http_response_bytes_total", "handler", "blob"), nil
}

// agentsReceived sums the agents' verified piece bytes from other agents
// and from the origin's seeder.
func agentsReceived(ctx context.Context, agents []string) (fromPeers, fromOrigin float64, err error) {
	for _, a := range agents {
		m, err := promscrape.Scrape(ctx, nil, "http://"+a+"/metrics")
		if err != nil {
			return 0, 0, err
		}
		fromPeers += m.Sum("shoal_agent_downloaded_bytes_total", "source", "peer")
		fromOrigin += m.Sum("shoal_agent_downloaded_bytes_total", "source", "origin")
	}
	return fromPeers, fromOrigin, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " ")
}
