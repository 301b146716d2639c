package tracker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	grpcpeer "google.golang.org/grpc/peer"

	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// These benchmarks print the figures issue 4 asks of the tracker:
// announces per second (BenchmarkServerAnnounce*, see announces/s) and
// memory per (peer, blob) entry (BenchmarkTableBytesPerEntry). They are
// measurements, not tests: nothing asserts a number.
//
// announces/s is wall-clock throughput and drops when other processes share
// the cores; announces/cpu-s divides by the CPU time this process used (for
// the gRPC benchmark, client and server together), which does not.
//
//	go test -run '^$' -bench . -benchtime 3s ./pkg/tracker/

const (
	benchBlobs        = 1000
	benchPeersPerBlob = 50
)

func benchDigest(i int) string { return fmt.Sprintf("sha256:%064x", i) }

func benchIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// populate fills a server's table with benchBlobs blobs of
// benchPeersPerBlob peers, a swarm per layer as in a fleet-wide rollout.
func benchServer(b *testing.B) *Server {
	b.Helper()
	srv, err := NewServer(DefaultConfig(), Options{
		Registerer: prometheus.NewRegistry(),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	pol := srv.policy
	pol.Limit = DefaultConfig().DefaultPeers
	for blob := range benchBlobs {
		for p := range benchPeersPerBlob {
			id := blob*benchPeersPerBlob + p
			srv.table.Announce(benchDigest(blob), Peer{
				ID: fmt.Sprintf("peer-%08d", id), Addr: benchIP(id).String() + ":7002", IP: benchIP(id),
				Complete: p%3 == 0, Pieces: p,
			}, time.Hour, now, pol)
		}
	}
	return srv
}

// BenchmarkServerAnnounce measures the announce handler without the network:
// request validation, table update and hand-out over a 50-peer swarm.
func BenchmarkServerAnnounce(b *testing.B) {
	srv := benchServer(b)
	ctx := grpcpeer.NewContext(context.Background(), &grpcpeer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 5000}})
	var seq atomic.Int64
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(seq.Add(1))
			blob := i % benchBlobs
			req := &trackerpb.AnnounceRequest{
				Digest: benchDigest(blob), PeerId: fmt.Sprintf("peer-%08d", blob*benchPeersPerBlob+i%benchPeersPerBlob),
				Addr: ":7002", Bitfield: []byte{0xff, 0x0f},
			}
			if _, err := srv.Announce(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	reportThroughput(b, cpu0)
}

// BenchmarkServerAnnounceGRPC measures announces end to end over loopback
// gRPC, with as many concurrent callers as GOMAXPROCS×4 (agents announce
// independently). Client and server share the machine's cores.
func BenchmarkServerAnnounceGRPC(b *testing.B) {
	srv := benchServer(b)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	trackerpb.RegisterTrackerServer(g, srv)
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()

	cfg := DefaultClientConfig()
	cfg.Trackers = []string{lis.Addr().String()}
	c, err := NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var seq atomic.Int64
	b.SetParallelism(4)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(seq.Add(1))
			blob := i % benchBlobs
			req := &trackerpb.AnnounceRequest{
				Digest: benchDigest(blob), PeerId: fmt.Sprintf("peer-%08d", blob*benchPeersPerBlob+i%benchPeersPerBlob),
				Addr: ":7002", Bitfield: []byte{0xff, 0x0f},
			}
			if _, err := c.Announce(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
	reportThroughput(b, cpu0)
}

// BenchmarkTableBytesPerEntry measures heap per (peer, blob) entry, with
// realistic sizes: 64-character digests, 24-byte peer ids, IPv4 addresses,
// a shared locality label.
func BenchmarkTableBytesPerEntry(b *testing.B) {
	const blobs, peers = 2000, 100
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tab := NewTable(DefaultConfig().Shards, Limits{}, nil)
		now := time.Now()
		pol := Policy{Limit: 30}
		for blob := range blobs {
			d := benchDigest(blob)
			for p := range peers {
				id := blob*peers + p
				// Complete peers skip the hand-out, so this measures the
				// table, not the answers.
				tab.Announce(d, Peer{
					ID: fmt.Sprintf("agent-%017d", id), Addr: benchIP(id).String() + ":7002", IP: benchIP(id),
					Locality: "zone-a", Complete: true,
				}, time.Hour, now, pol)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(tab.Len()), "bytes/entry")
		runtime.KeepAlive(tab)
	}
}

// cpuTime returns the user+system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportThroughput(b *testing.B, cpu0 time.Duration) {
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "announces/s")
	if cpu := cpuTime(b) - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "announces/cpu-s")
	}
}
