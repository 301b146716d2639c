package swarm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"path"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/origin/seeder"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// originUnderTest is an origin seeder on 127.0.0.1 serving one blob, with
// its metrics.
type originUnderTest struct {
	addr string
	key  *auth.Key
	reg  *prometheus.Registry
	data []byte
	d    digest.Digest
}

// startOrigin serves a blob of size bytes from an origin seeder; pieceListen is its piece data path ("off" keeps pieces on
// the streams).
func startOrigin(t *testing.T, size int, pieceListen string) *originUnderTest {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{3}).Read(data)
	d := digest.FromBytes(data)
	drv := inmemory.New()
	h := d.Encoded()
	if err := drv.PutContent(context.Background(), path.Join("/docker/registry/v2/blobs", string(d.Algorithm()), h[:2], h, "data"), data); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := seeder.DefaultConfig()
	cfg.Listen = ln.Addr().String()
	cfg.CacheDir = t.TempDir()
	cfg.PieceListen = pieceListen
	key := auth.NewKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize)))
	reg := prometheus.NewRegistry()
	srv, err := seeder.New(cfg, drv, seeder.Options{Key: key, Registerer: reg, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	peerpb.RegisterPeerServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(func() {
		gs.Stop()
		_ = srv.Close()
	})
	return &originUnderTest{addr: ln.Addr().String(), key: key, reg: reg, data: data, d: d}
}

// metric sums the origin's samples of the metric name whose labels
// include want.
func (o *originUnderTest) metric(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := o.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue samples
				}
			}
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// pull reads the origin's blob through s and checks it.
func (o *originUnderTest) pull(t *testing.T, s *Swarm) {
	t.Helper()
	tok, err := o.key.IssueCapability(o.d, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Open(t.Context(), o.d, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := b.NewReader(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, o.data) {
		t.Fatal("the blob pulled differs from the origin's")
	}
}

// An agent that has pulled a blob ends its stream to the origin's seeder
// cleanly (its side closed, the seeder's answered to the end), not with a
// cancel: the seeder cannot tell a cancelled stream from a crashed agent,
// and frees every piece it gave the agent for the next one asking
// ("connection_broken"), to be sent again while the agent seeds them.
func TestAgentDoneWithTheOriginEndsItsStreamCleanly(t *testing.T) {
	for _, tc := range []struct{ name, pieces string }{
		{"stream", seeder.PieceListenOff},
		{"piece data path", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startOrigin(t, 10<<20+123, tc.pieces)
			cfg := DefaultConfig()
			cfg.PeerID = "agent-under-test"
			cfg.Seeders = []string{o.addr}
			cfg.PieceListen = "127.0.0.1:0"
			s, err := New(cfg, t.TempDir(), 1<<30, Options{Keys: auth.NewVerifier(o.key.Public()), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close(context.Background()) })
			o.pull(t, s)
			eventually.True(t, "the origin's streams and piece connections to end once the pull is done", func() bool {
				return o.metric(t, "shoal_origin_seeder_streams", nil) == 0 &&
					o.metric(t, "shoal_origin_seeder_piece_data_path_connections", nil) == 0
			})
			if n := o.metric(t, "shoal_origin_seeder_superseed_grants_freed_total", map[string]string{"reason": "connection_broken"}); n != 0 {
				t.Errorf("the seeder freed %.0f grants as connection_broken after the agent pulled the blob and let go; want none (the agent has them)", n)
			}
		})
	}
}
