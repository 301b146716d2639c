package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/e2e/procstat"
)

// The goals for the swarm, meant for N=50 and S=256 MiB.
const (
	goalEgress = 1.1 // origin egress / S
	goalP90    = 1.5 // p90 completion / (S/B)
	goalN      = 50
	goalSize   = 256 << 20
)

func runSwarm(ctx context.Context, c config, bins binaries, dir string) error {
	var net *netns
	if c.netns {
		if err := removeLeftovers(ctx); err != nil {
			return err
		}
		net = &netns{rate: c.rate}
		// Deferred first so that it runs last, after the processes stopped.
		defer net.teardown()
	}
	l := &launcher{bins: bins, dir: dir, net: net}
	if c.originConfig != "" {
		l.originConfig = []string{"--config", c.originConfig}
	}
	defer l.stopEverything()
	if net != nil {
		if err := net.setup(ctx); err != nil {
			return err
		}
		for i := range c.n {
			link := linkPrefix + strconv.Itoa(i)
			if err := net.addHost(ctx, agentNS(i), link, agentIP(i)); err != nil {
				return err
			}
			if err := net.shape(ctx, agentNS(i), link); err != nil {
				return err
			}
		}
		if err := net.staticNeighbours(ctx); err != nil {
			return err
		}
	}
	cl, err := l.startCore(ctx, "swarm")
	if err != nil {
		return err
	}
	pushStart := time.Now()
	lay, err := pushImage(ctx, cl.originURL, "bench/swarm", c.size)
	if err != nil {
		return err
	}
	fmt.Printf("\n== Swarm: %d agents, one layer of %.0f MiB (pushed in %s)\n", c.n, mib(float64(c.size)), secs(time.Since(pushStart)))
	// The origin's link is shaped after the push: the push is setup, not
	// what is measured.
	if net != nil {
		if err := net.shape(ctx, originNS, linkPrefix+"o"); err != nil {
			return err
		}
	}
	if err := cl.startAgents(ctx, "swarm", c.n, c.agentConfig, nil); err != nil {
		return err
	}
	bound := 0.0
	if c.netns {
		bound = float64(c.size) / c.rateBytes
		fmt.Printf("links: every host %s both ways; physical bound S/B = %.1f s\n", c.rate, bound)
	} else {
		fmt.Println("links: loopback, no shaping (no physical bound; times are CPU-bound)")
	}

	before, err := cl.originEgress(ctx)
	if err != nil {
		return err
	}
	pids := make([]int, c.n)
	urls := make([]string, c.n)
	for i, a := range cl.agents {
		pids[i] = a.proc.PID()
		urls[i] = a.clientURL + "/v2/" + lay.repo + "/blobs/" + lay.digest
	}
	rss := procstat.StartSampler(pids, 100*time.Millisecond)
	cpu0 := cpuOf(pids...)
	core0 := cpuOf(cl.origin.PID(), cl.trackerProc.PID())
	busy0, total0 := machineCPU()
	start, results, err := pullAll(ctx, c.netns, urls, c.pullTimeout)
	busy1, total1 := machineCPU()
	agentCPU := cpuOf(pids...) - cpu0
	coreCPU := cpuOf(cl.origin.PID(), cl.trackerProc.PID()) - core0
	peaks := peakRSS(rss, pids)
	if err != nil {
		return err
	}
	after, err := cl.originEgress(ctx)
	if err != nil {
		return err
	}
	fromPeers := cl.agentSum(ctx, "shoal_agent_downloaded_bytes_total", "source", "peer")
	fromOrigin := cl.agentSum(ctx, "shoal_agent_downloaded_bytes_total", "source", "origin")
	discarded := cl.agentSum(ctx, "shoal_agent_discarded_bytes_total")
	duplicate := cl.agentSum(ctx, "shoal_agent_duplicate_bytes_total")
	cl.stopAgents()

	st := summarize(lay, start, results)
	egress := after.minus(before)
	S := float64(lay.size)
	fmt.Println("\nP2P, every host pulling through its agent (GET /v2/<name>/blobs/<digest> on the agent, digest checked by the client):")
	printPulls(st, c.n, bound)
	fmt.Printf("  origin egress: %.1f MiB = %.3f x S (seeder %.1f MiB, registry API blob bodies %.1f MiB)\n",
		mib(egress.total()), egress.total()/S, mib(egress.seeder), mib(egress.http))
	fmt.Printf("  seeder: %.0f pieces sent whole, %.0f sends of a piece sent before; requests declined: %.0f busy, %.0f at peers (superseeding)\n",
		egress.pieces, egress.again, egress.busy, egress.atPeers)
	fmt.Printf("  seeder: superseeding grants freed:")
	for k, r := range freedReasons {
		fmt.Printf(" %.0f %s", egress.freed[k], r)
	}
	fmt.Println()
	fmt.Printf("  agents received %.1f MiB from peers, %.1f MiB from the origin's seeder (duplicates %.1f MiB, discarded %.1f MiB)\n",
		mib(fromPeers), mib(fromOrigin), mib(duplicate), mib(discarded))
	printRSS(peaks)
	printCPU(st, agentCPU, coreCPU, busy1-busy0, total1-total0)
	fmt.Println("  goals (issue 4, N=50, S=256 MiB):")
	note := ""
	if c.n != goalN || c.size != goalSize {
		note = fmt.Sprintf(" (this run: N=%d, S=%.0f MiB)", c.n, mib(S))
	}
	egressOK := st.ok == c.n && egress.total() <= goalEgress*S
	fmt.Printf("    origin egress <= %.1f x S: %.3f x S  %s%s\n", goalEgress, egress.total()/S, verdict(egressOK), note)
	if c.netns {
		p90 := percentile(st.times, 90).Seconds() / bound
		fmt.Printf("    p90 completion <= %.1f x S/B: %.2f x S/B  %s%s\n", goalP90, p90, verdict(st.ok == c.n && p90 <= goalP90), note)
	} else {
		fmt.Println("    p90 completion <= 1.5 x S/B: not measured in loopback mode (no link rate)")
	}
	printGoals10(c, st, egress.total()/S, bound, agentCPU, peaks)

	// The same hosts, straight from the origin's registry API.
	for i := range urls {
		urls[i] = cl.originURL + "/v2/" + lay.repo + "/blobs/" + lay.digest
	}
	before, err = cl.originEgress(ctx)
	if err != nil {
		return err
	}
	start, results, err = pullAll(ctx, c.netns, urls, c.directTimeout)
	if err != nil {
		return err
	}
	// The origin counts a response's bytes as its handler returns; those
	// of pulls cut at the bound return a moment after the clients left.
	time.Sleep(2 * time.Second)
	after, err = cl.originEgress(ctx)
	if err != nil {
		return err
	}
	dst := summarize(lay, start, results)
	egress = after.minus(before)
	fmt.Printf("\nDirect, every host pulling from the origin's registry API (bounded to %s):\n", c.directTimeout)
	printPulls(dst, c.n, bound)
	fmt.Printf("  origin egress: %.1f MiB = %.3f x S (clients received %.1f MiB)\n", mib(egress.total()), egress.total()/S, mib(float64(dst.bytes)))
	if dst.ok < c.n && dst.wall > 0 {
		rate := float64(dst.bytes) / dst.wall.Seconds()
		proj := time.Duration(float64(c.n) * S / rate * float64(time.Second))
		fmt.Printf("  unfinished at the bound: %.1f MiB of %.1f MiB delivered at %.1f MiB/s in total; all %d pulls would end after about %s (projected, not measured)",
			mib(float64(dst.bytes)), mib(float64(c.n)*S), mib(rate), c.n, secs(proj))
		if bound > 0 {
			fmt.Printf(" = %.1f x S/B", proj.Seconds()/bound)
		}
		fmt.Println()
	}
	if st.ok < c.n {
		return fmt.Errorf("swarm: %d of %d P2P pulls failed or were wrong; first: %s", c.n-st.ok, c.n, st.firstErr)
	}
	return nil
}

// Issue 10's goals (the piece data path), each for one setting: 16 hosts,
// a 64 MiB layer, 200 Mbit/s links; 50 hosts, 256 MiB, 100 Mbit/s.
type swarmGoals struct {
	n       int
	size    int64
	rate    string
	p90     float64 // completion p90 / (S/B)
	egress  float64 // origin egress / S
	cpu     float64 // the agents' CPU-s per GiB delivered to clients; 0: none
	rssMiB  float64 // each agent's peak RSS; 0: none
	setting string
}

var goals10 = []swarmGoals{
	{n: 16, size: 64 << 20, rate: "200mbit", p90: 1.5, egress: 1.05, cpu: 4, setting: "16 hosts, 64 MiB, 200 Mbit/s"},
	{n: 50, size: 256 << 20, rate: "100mbit", p90: 2.0, egress: 1.05, rssMiB: 150, setting: "50 hosts, 256 MiB, 100 Mbit/s"},
}

// printGoals10 prints issue 10's goals for the setting this run is, if it
// is one of them.
func printGoals10(c config, st pullStats, egress, bound float64, agentCPU time.Duration, peaks []int64) {
	i := slices.IndexFunc(goals10, func(g swarmGoals) bool { return g.n == c.n && g.size == c.size && g.rate == c.rate && c.netns })
	if i < 0 {
		fmt.Printf("  goals (issue 10): none for this setting (they are for %s; %s)\n", goals10[0].setting, goals10[1].setting)
		return
	}
	g := goals10[i]
	allOK := st.ok == c.n
	fmt.Printf("  goals (issue 10, %s):\n", g.setting)
	p90 := percentile(st.times, 90).Seconds() / bound
	fmt.Printf("    p90 completion <= %.1f x S/B: %.2f x S/B  %s\n", g.p90, p90, verdict(allOK && p90 <= g.p90))
	fmt.Printf("    origin egress <= %.2f x S: %.3f x S  %s\n", g.egress, egress, verdict(allOK && egress <= g.egress))
	if g.cpu > 0 && st.ok > 0 {
		perGiB := agentCPU.Seconds() / (float64(st.ok) * float64(c.size) / (1 << 30))
		fmt.Printf("    agents' CPU-s per GiB delivered <= %.0f: %.1f  %s\n", g.cpu, perGiB, verdict(allOK && perGiB <= g.cpu))
	}
	if g.rssMiB > 0 && len(peaks) > 0 {
		top := mib(float64(slices.Max(peaks)))
		fmt.Printf("    every agent's peak RSS <= %.0f MiB: max %.0f MiB  %s\n", g.rssMiB, top, verdict(top <= g.rssMiB))
	}
}

func printPulls(st pullStats, n int, bound float64) {
	fmt.Printf("  pulls: %d of %d complete and correct, %d failed, %d wrong bytes\n", st.ok, n, st.failed, st.wrong)
	if st.firstErr != "" {
		fmt.Printf("  first problem: %s\n", st.firstErr)
	}
	if len(st.times) == 0 {
		return
	}
	row := func(name string, d time.Duration) string {
		if bound > 0 {
			return fmt.Sprintf("%s %s (%.2f x S/B)", name, secs(d), d.Seconds()/bound)
		}
		return fmt.Sprintf("%s %s", name, secs(d))
	}
	fmt.Printf("  completion: %s, %s, %s, %s\n", row("p50", percentile(st.times, 50)), row("p90", percentile(st.times, 90)),
		row("max", st.times[len(st.times)-1]), row("wall", st.wall))
}

// peakRSS stops s, which samples pids, and returns each one's peak RSS in
// bytes, raised to the process's VmHWM (the kernel's own peak, which catches
// spikes between samples) when that is readable. A process that has exited
// keeps its sampled peak.
func peakRSS(s *procstat.Sampler, pids []int) []int64 {
	peaks := s.Stop()
	for i, pid := range pids {
		if st, err := procstat.ReadStatus(pid); err == nil {
			peaks[i] = max(peaks[i], st.HWM)
		}
	}
	return peaks
}

func printRSS(peaks []int64) {
	if len(peaks) == 0 {
		return
	}
	s := slices.Clone(peaks)
	slices.Sort(s)
	var all []string
	for _, p := range peaks {
		all = append(all, fmt.Sprintf("%.0f", mib(float64(p))))
	}
	fmt.Printf("  agent peak RSS: min %.0f MiB, median %.0f MiB, max %.0f MiB\n", mib(float64(s[0])), mib(float64(s[len(s)/2])), mib(float64(s[len(s)-1])))
	fmt.Printf("  per agent (MiB, agent 0 first): %s\n", strings.Join(all, " "))
}

// printCPU says where the machine's CPU went during the pulls: on two
// shared cores it, rather than the links, may be what the times show.
func printCPU(st pullStats, agents, core time.Duration, busy, total int64) {
	fmt.Printf("  CPU during the pulls (wall %s): agents %.1f s, origin+tracker %.1f s", secs(st.wall), agents.Seconds(), core.Seconds())
	if st.clientCPU > 0 {
		fmt.Printf(", pull clients %.0f s", st.clientCPU.Seconds())
	}
	if total > 0 {
		fmt.Printf("; machine busy %.0f%% of all cores (other users included)", 100*float64(busy)/float64(total))
	}
	fmt.Println()
}
