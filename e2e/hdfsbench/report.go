package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

// goal is issue 3's bar: the origin moves a layer at least this fraction
// as fast as hdfs-cli moves the same bytes.
const goal = 0.8

// figures are the results of a whole run.
type figures struct {
	idleRSS              int64
	cliPut, cliCat       []transfer
	push, pull           []transfer
	rpcCLIPut, rpcCLICat rpcCounts
	rpcPush, rpcPull     rpcCounts
}

func (f figures) print(w io.Writer, cfg config, b *bench) {
	rate := func(t transfer) float64 { return t.mibps() }
	putR, catR := median(f.cliPut, rate), median(f.cliCat, rate)
	pushR, pullR := median(f.push, rate), median(f.pull, rate)
	verdict := func(r float64) string {
		if r >= goal {
			return "meets"
		}
		return "MISSES"
	}
	fmt.Fprintf(w, "\nhdfsbench %s: %d MiB blob, %d runs (median), MiniDFSCluster with 3 datanodes, replication 2, 128 MiB blocks; %d cores\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), cfg.sizeMiB, cfg.runs, runtime.NumCPU())
	fmt.Fprintf(w, "| | push MiB/s | pull MiB/s |\n|---|---:|---:|\n")
	fmt.Fprintf(w, "| hdfs-cli (`hdfs put` / `hdfs cat`) | %.1f | %.1f |\n", putR, catR)
	fmt.Fprintf(w, "| origin (POST+PATCH+PUT / GET) | %.1f | %.1f |\n", pushR, pullR)
	fmt.Fprintf(w, "| origin / hdfs-cli (goal >= %.0f%%) | %.0f%% %s | %.0f%% %s |\n\n",
		goal*100, 100*pushR/putR, verdict(pushR/putR), 100*pullR/catR, verdict(pullR/catR))
	fmt.Fprintf(w, "runs, MiB/s: hdfs put %s; hdfs cat %s; origin push %s; origin pull %s\n",
		rates(f.cliPut), rates(f.cliCat), rates(f.push), rates(f.pull))
	peak := func(ts []transfer) int64 {
		var m int64
		for _, t := range ts {
			m = max(m, t.peakRSS)
		}
		return m
	}
	fmt.Fprintf(w, "origin RSS: %.0f MiB idle; peak %.0f MiB while pushing, %.0f MiB while pulling (sampled every 20 ms)\n",
		float64(f.idleRSS)/mib, float64(peak(f.push))/mib, float64(peak(f.pull))/mib)
	if n := len(f.push); n > 0 {
		fmt.Fprintf(w, "storage driver operations per pushed layer: %s\n", formatCounts(f.push[n-1].ops, nil))
		fmt.Fprintf(w, "storage driver operations per pulled layer: %s\n", formatCounts(f.pull[n-1].ops, nil))
	}
	fmt.Fprintf(w, "namenode RPCs per pushed layer: origin %s; hdfs put %s\n", f.rpcPush.String(), f.rpcCLIPut.String())
	fmt.Fprintf(w, "namenode RPCs per pulled layer: origin %s; hdfs cat %s\n", f.rpcPull.String(), f.rpcCLICat.String())
	fmt.Fprintf(w, "(RPCs from the namenode's RpcDetailedActivity counters, without datanode heartbeats and reports and without %s)\n",
		"renewLease, which each HDFS client sends once a second; the origin's counts are for the whole POST+PATCH+PUT, and for one GET")
}

func (r rpcCounts) String() string {
	if r.err != nil {
		return "not counted: " + r.err.Error()
	}
	return formatCounts(r.byMethod, backgroundRPCs)
}

func rates(ts []transfer) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = fmt.Sprintf("%.1f", t.mibps())
	}
	return strings.Join(s, " ")
}
