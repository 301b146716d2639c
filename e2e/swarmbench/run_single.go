package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/e2e/procstat"
	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/auth"

	"github.com/shoal-dev/shoal/proto/peerpb"
)

// The goals for one agent, meant for a 1 GiB layer on loopback: issue 4's,
// and issue 10's (the piece data path) for the agent's CPU.
const (
	goalColdRatio = 0.8 // cold pull through the agent / direct GET from the origin
	goalWarm      = 1e9 // bytes/s from the agent's cache
	goalRSS       = 150 << 20

	goal10ColdRatio = 0.4 // issue 10: cold pull / direct
	goal10AgentCPU  = 2.0 // issue 10: the agent's CPU-s per GiB of a cold pull
)

// singleCompare is a peer-agent config for a second fresh agent whose cold
// pull is printed beside the first's, in the same run (two settings
// compared as a ratio on the same machine state, under the same load).
var singleCompare = flag.String("single-compare-config", "",
	"peer-agent YAML config of a second fresh agent whose cold pull is printed beside the first's (the one-agent figures; default: none)")

// runSingle measures one agent on loopback without shaping: a cold pull of
// a layer through it, warm pulls from its cache and its peak RSS, against
// GETs of the same layer from the origin's registry API.
func runSingle(ctx context.Context, c config, bins binaries, dir string) error {
	l := &launcher{bins: bins, dir: dir}
	defer l.stopEverything()
	cl, err := l.startCore(ctx, "single")
	if err != nil {
		return err
	}
	lay, err := pushImage(ctx, cl.originURL, "bench/single", c.singleSize)
	if err != nil {
		return err
	}
	S := float64(lay.size)
	fmt.Printf("\n== One agent, loopback, no shaping: one layer of %.0f MiB\n", mib(S))

	// The seeder computes the metainfo (hashing the blob) and caches the
	// blob on the first GetMetainfo: a one-time cost per blob at the
	// origin, paid here so that the cold pull measures the agent.
	t0 := time.Now()
	if err := getMetainfo(ctx, cl.seeder, cl.originURL, "bench/single", lay.digest); err != nil {
		return err
	}
	fmt.Printf("  origin seeder: metainfo computed and blob cached in %s (once per blob, not in the figures below)\n", secs(time.Since(t0)))

	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	timed := func(url string) (float64, error) {
		r := pull(ctx, client, url)
		switch {
		case r.Err != "":
			return 0, fmt.Errorf("pulling %s: %s", url, r.Err)
		case r.Digest != lay.digest || r.Bytes != lay.size:
			return 0, fmt.Errorf("pulling %s: %d bytes with digest %s, want %d with %s", url, r.Bytes, r.Digest, lay.size, lay.digest)
		}
		return S / r.took().Seconds(), nil
	}
	median := func(url string, n int) (float64, []float64, error) {
		var all []float64
		for range n {
			v, err := timed(url)
			if err != nil {
				return 0, nil, err
			}
			all = append(all, v)
		}
		s := slices.Clone(all)
		slices.Sort(s)
		return s[len(s)/2], all, nil
	}
	// CPU seconds per GiB pulled, by process: where a pull's time goes on
	// two shared cores.
	self := os.Getpid()
	cpuOf := func(pid int) time.Duration {
		if pid == 0 {
			return 0
		}
		d, _ := procstat.CPU(pid)
		return d
	}
	type cpuSnap struct{ origin, agent, client time.Duration }
	agentPID := 0
	snap := func() cpuSnap { return cpuSnap{cpuOf(cl.origin.PID()), cpuOf(agentPID), cpuOf(self)} }
	perGiB := func(a, b cpuSnap, bytes float64) string {
		g := bytes / (1 << 30)
		f := func(d time.Duration) float64 { return d.Seconds() / g }
		return fmt.Sprintf("origin %.2f, agent %.2f, client %.2f", f(b.origin-a.origin), f(b.agent-a.agent), f(b.client-a.client))
	}
	blobPath := "/v2/" + lay.repo + "/blobs/" + lay.digest
	c0 := snap()
	direct, directAll, err := median(cl.originURL+blobPath, 3)
	if err != nil {
		return err
	}
	directCPU := perGiB(c0, snap(), 3*S)
	if err := cl.startAgents(ctx, "single", 1, "", nil); err != nil {
		return err
	}
	a := cl.agents[0]
	agentPID = a.proc.PID()
	pids := []int{agentPID}
	rss := procstat.StartSampler(pids, 20*time.Millisecond)
	c0 = snap()
	cold, err := timed(a.url + blobPath)
	if err != nil {
		rss.Stop()
		return err
	}
	c1 := snap()
	coldCPU := perGiB(c0, c1, S)
	coldAgentCPU := (c1.agent - c0.agent).Seconds() / (S / (1 << 30))
	coldPeak := peakRSS(rss, pids)[0]
	rss = procstat.StartSampler(pids, 20*time.Millisecond)
	warm, warmAll, err := median(a.url+blobPath, 3)
	warmPeak := peakRSS(rss, pids)[0]
	if err != nil {
		return err
	}
	var compare string
	if *singleCompare != "" {
		// The first agent goes, so that the second takes the layer from
		// the origin, not from it (same peer id: the tracker's entry is
		// the second's from its first announce).
		cl.stopAgents()
		if err := cl.startAgents(ctx, "single-compare", 1, *singleCompare, nil); err != nil {
			return err
		}
		agentPID = cl.agents[0].proc.PID()
		c0 := snap()
		v, err := timed(cl.agents[0].url + blobPath)
		if err != nil {
			return err
		}
		c1 := snap()
		compare = fmt.Sprintf("  cold pull through a second agent with %s: %.0f MB/s = %.0f%% of direct (%.2f x the first's); CPU-s per GiB: %s\n",
			*singleCompare, v/1e6, 100*v/direct, v/cold, perGiB(c0, c1, S))
	}
	fresh, warmPages, err := pageCacheWriteCost(dir, lay.size)
	if err != nil {
		return err
	}
	mbs := func(v float64) string { return fmt.Sprintf("%.0f MB/s", v/1e6) }
	fmt.Printf("  direct GET from the origin's registry API: %s (median of %s, %s, %s)\n", mbs(direct), mbs(directAll[0]), mbs(directAll[1]), mbs(directAll[2]))
	fmt.Printf("  cold pull through the agent: %s = %.0f%% of direct  goal >= %.0f%%: %s\n", mbs(cold), 100*cold/direct, 100*goalColdRatio, verdict(cold >= goalColdRatio*direct))
	fmt.Printf("  warm pull from the agent's cache: %s (median of %s, %s, %s)  goal >= 1 GB/s: %s\n", mbs(warm), mbs(warmAll[0]), mbs(warmAll[1]), mbs(warmAll[2]), verdict(warm >= goalWarm))
	fmt.Printf("  CPU-s per GiB pulled: direct: %s; cold through the agent: %s\n", directCPU, coldCPU)
	fmt.Print(compare)
	g := S / (1 << 30)
	fmt.Printf("  this machine's page cache, CPU-s per GiB of new file data written (the agent's cache writes pay it, a direct GET does not): %.2f on free memory as the pull found it, %.2f on pages just freed\n",
		fresh.Seconds()/g, warmPages.Seconds()/g)
	fmt.Printf("  agent peak RSS: cold pull %.0f MiB, warm pulls %.0f MiB  goal <= 150 MiB: %s\n", mib(float64(coldPeak)), mib(float64(warmPeak)), verdict(max(coldPeak, warmPeak) <= goalRSS))
	fmt.Println("  goals (issue 10, 1 GiB, loopback):")
	fmt.Printf("    cold pull >= %.0f%% of direct: %.0f%%  %s\n", 100*goal10ColdRatio, 100*cold/direct, verdict(cold >= goal10ColdRatio*direct))
	fmt.Printf("    agent CPU-s per GiB of the cold pull <= %.1f: %.2f (%.2f of it at most this machine's page-cache cost above)  %s\n",
		goal10AgentCPU, coldAgentCPU, min(coldAgentCPU, fresh.Seconds()/g), verdict(coldAgentCPU <= goal10AgentCPU))
	return nil
}

// getMetainfo asks the seeder for a blob's metainfo, with the capability
// the origin hands out with the blob.
func getMetainfo(ctx context.Context, seeder, originURL, repo, d string) error {
	conn, err := grpc.NewClient(seeder, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dialing the seeder: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	tok, err := testenv.Capability(ctx, originURL, repo, digest.Digest(d))
	if err != nil {
		return err
	}
	if _, err := peerpb.NewPeerClient(conn).GetMetainfo(auth.WithCapability(ctx, tok), &peerpb.GetMetainfoRequest{Digest: d}); err != nil {
		return fmt.Errorf("getting the metainfo of %s: %w", d, err)
	}
	return nil
}
