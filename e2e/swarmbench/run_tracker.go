package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shoal-dev/shoal/e2e/procstat"
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
	// The tracker's default list length, which every timed announce must
	// get (each blob has 99 other holders).
	trackerAnswerPeers = 20
)

// runTracker measures a tracker process over loopback gRPC: the memory one
// (peer, blob) entry costs, and announces per second with the load
// generator on the same two cores.
func runTracker(ctx context.Context, c config, bins binaries, dir string) error {
	l := &launcher{bins: bins, dir: dir}
	defer l.stopEverything()
	// The load generator's own heap is a few MiB, so at the default GOGC
	// it collected many times a second, ~14% of its CPU, taken from the
	// cores the tracker runs on. Its memory does not matter here.
	defer debug.SetGCPercent(debug.SetGCPercent(800))
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
	conns := make([]*grpc.ClientConn, trackerConns)
	for i := range conns {
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(answerCodec{encoding.GetCodecV2(grpcproto.Name)})))
		if err != nil {
			return fmt.Errorf("dialing the tracker: %w", err)
		}
		defer conn.Close()
		conns[i] = conn
	}
	digests := make([]string, trackerBlobs)
	for i := range digests {
		digests[i] = fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(strconv.Itoa(i))))
	}
	// Peer ids as agents make them (hostname-random, ~23 bytes) and IPv4
	// addresses spread over /24s, made once so that the load generator
	// spends its CPU on announcing.
	peerIDs := make([]string, trackerPeers)
	peerAddrs := make([]string, trackerPeers)
	for j := range trackerPeers {
		peerIDs[j] = fmt.Sprintf("node-%06d-%08x", j, uint32(j)*2654435761)
		peerAddrs[j] = fmt.Sprintf("10.%d.%d.%d:7002", j>>16&255, j>>8&255, j&255)
	}
	bitfield := make([]byte, 8) // a 64-piece blob, half held
	for i := range bitfield {
		bitfield[i] = 0xaa
	}
	// announcer is one concurrent announcer: each announce is its own unary
	// RPC; the request message and the answer's decoding buffers are reused.
	type announcer struct {
		req trackerpb.AnnounceRequest
		ans checkedAnswer
	}
	// announce sends one announce and checks the answer (checkedAnswer):
	// wantPeers peers, or at most -wantPeers when it is negative.
	announce := func(ctx context.Context, a *announcer, conn *grpc.ClientConn, blob, peer int, event trackerpb.Event, numWant uint32, wantPeers int) error {
		a.req.Digest, a.req.PeerId, a.req.Addr = digests[blob], peerIDs[peer], peerAddrs[peer]
		a.req.Bitfield, a.req.Event, a.req.NumWant = bitfield, event, numWant
		a.ans.self, a.ans.want = peerIDs[peer], wantPeers
		return conn.Invoke(ctx, trackerpb.Tracker_Announce_FullMethodName, &a.req, &a.ans)
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
			var a announcer
			for {
				k := next.Add(1) - 1
				if k >= trackerBlobs*trackerPeers {
					return
				}
				if err := announce(ctx, &a, conns[g%trackerConns], int(k%trackerBlobs), int(k/trackerBlobs), trackerpb.Event_EVENT_STARTED, 1, -1); err != nil {
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
	cpuBefore, err := procstat.CPU(p.PID())
	if err != nil {
		return err
	}
	selfBefore := selfCPU()
	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	lctx, cancel := context.WithTimeout(ctx, c.trackerDuration)
	defer cancel()
	end, _ := lctx.Deadline()
	start := time.Now()
	for g := range trackerClients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			var a announcer
			for lctx.Err() == nil {
				err := announce(lctx, &a, conns[g%trackerConns], rng.IntN(trackerBlobs), rng.IntN(trackerPeers), trackerpb.Event_EVENT_UNSPECIFIED, 0, trackerAnswerPeers)
				switch {
				case err == nil:
					ok.Add(1)
				case lctx.Err() == nil && time.Now().Before(end):
					// (grpc fails a call at once when the deadline has
					// passed, which can be before lctx's timer fires on a
					// busy machine: not an error.)
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	cpuAfter, err := procstat.CPU(p.PID())
	if err != nil {
		return err
	}
	selfAfter := selfCPU()
	n := float64(ok.Load())
	rate := n / took.Seconds()
	fmt.Printf("  announces: %.0f/s over %s (%d clients on %d connections, 20 peers per answer; %d errors)  goal >= %d/s: %s\n",
		rate, secs(took), trackerClients, trackerConns, failed.Load(), goalAnnounces, verdict(rate >= goalAnnounces))
	if err := firstErr.Load(); err != nil {
		fmt.Printf("  first error: %v\n", *err)
	}
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
	st, err := procstat.ReadStatus(pid)
	if err != nil {
		return 0, 0, err
	}
	return m.Sum("go_memstats_heap_inuse_bytes"), float64(st.RSS), nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// answerCodec is the proto codec, except that announce answers are decoded
// into a reused checkedAnswer rather than a new AnnounceResponse: the load
// generator shares the tracker's two cores, and allocating 20 PeerInfo
// messages and their strings per answer was a third of its CPU. The bytes
// on the wire are the same.
type answerCodec struct{ proto encoding.CodecV2 }

func (c answerCodec) Name() string { return c.proto.Name() }

func (c answerCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c answerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	a, ok := v.(*checkedAnswer)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	b := a.buf[:0]
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		n := data.Len()
		if cap(b) < n {
			b = make([]byte, n)
		}
		b = b[:n]
		data.CopyTo(b)
		a.buf = b
	}
	return a.parse(b)
}

// checkedAnswer checks an announce answer as it is decoded (the message's
// buffer is not the caller's once Unmarshal returns): want peers (at most
// -want when want is negative), each with an id and an address, never self,
// and an interval.
type checkedAnswer struct {
	self string
	want int
	buf  []byte
}

// parse decodes and checks an AnnounceResponse (shoal.tracker.v1, fields: 1
// repeated PeerInfo, 2 Duration interval; PeerInfo: 1 peer_id, 2 addr, 3-5
// flags and count).
func (a *checkedAnswer) parse(b []byte) error {
	peers, interval := 0, false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 2 && typ == protowire.BytesType {
			interval = true
		}
		if num != 1 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		m, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var id, addr []byte
		for len(m) > 0 {
			num, typ, n := protowire.ConsumeTag(m)
			if n < 0 {
				return protowire.ParseError(n)
			}
			m = m[n:]
			if (num == 1 || num == 2) && typ == protowire.BytesType {
				v, n := protowire.ConsumeBytes(m)
				if n < 0 {
					return protowire.ParseError(n)
				}
				if num == 1 {
					id = v
				} else {
					addr = v
				}
				m = m[n:]
				continue
			}
			if n = protowire.ConsumeFieldValue(num, typ, m); n < 0 {
				return protowire.ParseError(n)
			}
			m = m[n:]
		}
		if len(id) == 0 || len(addr) == 0 {
			return fmt.Errorf("answer's peer %d has id %q, addr %q", peers, id, addr)
		}
		if string(id) == a.self {
			return fmt.Errorf("answer to %s includes itself", a.self)
		}
		peers++
	}
	switch {
	case a.want >= 0 && peers != a.want:
		return fmt.Errorf("answer has %d peers, want %d", peers, a.want)
	case a.want < 0 && peers > -a.want:
		return fmt.Errorf("answer has %d peers, want at most %d", peers, -a.want)
	case !interval:
		return errors.New("answer has no interval")
	}
	return nil
}
