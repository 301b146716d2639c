package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

const (
	goalAnnounces = 20000
	// The table the load runs against: as many (peer, blob) entries as 100
	// agents each holding 1,000 blobs.
	trackerBlobs = 1000
	trackerPeers = 100
	// Concurrent announces in flight and the connections they share.
	trackerClients = 64
	trackerConns   = 4
)

// runTracker measures a tracker process over loopback gRPC: the memory one
// (peer, blob) entry costs, and announces per second with the load
// generator on the same two cores.
func runTracker(ctx context.Context, c config, bins binaries, dir string) error {
	l := &launcher{bins: bins, dir: dir}
	defer l.stopEverything()
	grpcAddr, err := testenv.FreeAddr()
	if err != nil {
		return err
	}
	httpAddr, err := testenv.FreeAddr()
	if err != nil {
		return err
	}
	p, err := l.start(ctx, "", "tracker-load", bins.tracker, []string{"--listen", grpcAddr, "--metrics-listen", httpAddr, "--log-level", "warn"}, "http://"+httpAddr+"/readyz")
	if err != nil {
		return err
	}
	metrics := "http://" + httpAddr + "/metrics"
	conns := make([]trackerpb.TrackerClient, trackerConns)
	for i := range conns {
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("dialing the tracker: %w", err)
		}
		defer conn.Close()
		conns[i] = trackerpb.NewTrackerClient(conn)
	}
	digests := make([]string, trackerBlobs)
	for i := range digests {
		digests[i] = fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(strconv.Itoa(i))))
	}
	// Peer ids as agents make them (hostname-random, ~23 bytes) and IPv4
	// addresses spread over /24s.
	peerID := func(j int) string { return fmt.Sprintf("node-%06d-%08x", j, uint32(j)*2654435761) }
	peerAddr := func(j int) string { return fmt.Sprintf("10.%d.%d.%d:7002", j>>16&255, j>>8&255, j&255) }
	bitfield := make([]byte, 8) // a 64-piece blob, half held
	for i := range bitfield {
		bitfield[i] = 0xaa
	}
	announce := func(ctx context.Context, cl trackerpb.TrackerClient, blob, peer int, event trackerpb.Event, numWant uint32) error {
		_, err := cl.Announce(ctx, &trackerpb.AnnounceRequest{
			Digest: digests[blob], PeerId: peerID(peer), Addr: peerAddr(peer),
			Bitfield: bitfield, Event: event, NumWant: numWant,
		})
		return err
	}

	fmt.Printf("\n== Tracker process, loopback gRPC, load generator on the same cores\n")
	heapBefore, rssBefore, err := trackerMemory(ctx, metrics, p.PID())
	if err != nil {
		return err
	}
	// Fill: every (peer, blob) once, asking for one peer back.
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, trackerClients)
	fillStart := time.Now()
	for g := range trackerClients {
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= trackerBlobs*trackerPeers {
					return
				}
				if err := announce(ctx, conns[g%trackerConns], int(k%trackerBlobs), int(k/trackerBlobs), trackerpb.Event_EVENT_STARTED, 1); err != nil {
					errs[g] = fmt.Errorf("filling the tracker: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	fillTook := time.Since(fillStart)
	m, err := testenv.ScrapeMetrics(ctx, metrics)
	if err != nil {
		return err
	}
	entries := m.Sum("shoal_tracker_peers")
	heapAfter, rssAfter, err := trackerMemory(ctx, metrics, p.PID())
	if err != nil {
		return err
	}
	fmt.Printf("  table filled with %.0f (peer, blob) entries (%d blobs x %d peers) in %s\n", entries, trackerBlobs, trackerPeers, secs(fillTook))
	if entries > 0 {
		fmt.Printf("  memory per entry: %.0f bytes of Go heap in use, %.0f bytes of RSS (both include the GC's headroom; process, not a unit benchmark)\n",
			(heapAfter-heapBefore)/entries, (rssAfter-rssBefore)/entries)
	}

	// Timed: re-announces of random existing entries, each answered with
	// the tracker's default peer list, as downloading agents do.
	cpuBefore, err := procCPU(p.PID())
	if err != nil {
		return err
	}
	selfBefore := selfCPU()
	var ok, failed atomic.Int64
	lctx, cancel := context.WithTimeout(ctx, c.trackerDuration)
	defer cancel()
	start := time.Now()
	for g := range trackerClients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for lctx.Err() == nil {
				err := announce(lctx, conns[g%trackerConns], rng.IntN(trackerBlobs), rng.IntN(trackerPeers), trackerpb.Event_EVENT_UNSPECIFIED, 0)
				switch {
				case err == nil:
					ok.Add(1)
				case lctx.Err() == nil:
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	cpuAfter, err := procCPU(p.PID())
	if err != nil {
		return err
	}
	selfAfter := selfCPU()
	n := float64(ok.Load())
	rate := n / took.Seconds()
	fmt.Printf("  announces: %.0f/s over %s (%d clients on %d connections, 20 peers per answer; %d errors)  goal >= %d/s: %s\n",
		rate, secs(took), trackerClients, trackerConns, failed.Load(), goalAnnounces, verdict(rate >= goalAnnounces))
	if n > 0 {
		fmt.Printf("  CPU per announce: tracker %.1f µs, load generator %.1f µs (tracker alone on 2 cores would do about %.0f/s)\n",
			(cpuAfter-cpuBefore).Seconds()/n*1e6, (selfAfter-selfBefore).Seconds()/n*1e6, 2*n/(cpuAfter-cpuBefore).Seconds())
	}
	return ctx.Err()
}

// trackerMemory returns the tracker's Go heap in use (from its metrics)
// and its VmRSS.
func trackerMemory(ctx context.Context, metrics string, pid int) (heap, rss float64, err error) {
	m, err := testenv.ScrapeMetrics(ctx, metrics)
	if err != nil {
		return 0, 0, err
	}
	r, err := statusKiB(pid, "VmRSS")
	if err != nil {
		return 0, 0, err
	}
	return m.Sum("go_memstats_heap_inuse_bytes"), float64(r), nil
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesized command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (100 Hz on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
