package agent

import (
	"io"
	"net"
	"net/http"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/proto/peerpb"
)

// BenchmarkPull measures one agent pulling a 256 MiB layer with 4 MiB
// pieces through the mirror: cold (from the in-memory test seeder, every
// piece verified and written to the cache) and warm (from the cache),
// beside the same GET from the origin directly.
// Memory is not reported: the fixtures hold the layer several times over
// in this process; measure RSS on a peer-agent process instead.
//
//	go test -run '^$' -bench Pull -benchtime 3x ./pkg/peer/agent/
func BenchmarkPull(b *testing.B) {
	const size = 256 << 20
	o := startOrigin(b)
	layer := randomBytes(size, 11)
	d := o.pushBlob("team/app", layer)
	seeder := startSeeder(b, "origin-1", 4<<20, false)
	seeder.add(layer)
	pull := func(b *testing.B, a *testAgent) {
		resp, err := http.Get(a.url("/v2/team/app/blobs/" + d.String()))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			b.Fatalf("pulled %d bytes: %v", n, err)
		}
	}
	b.Run("origin-direct", func(b *testing.B) {
		// The same layer straight from the origin's registry API, for
		// comparison (no verification, no cache).
		b.SetBytes(size)
		for b.Loop() {
			resp, err := http.Get(o.URL + "/v2/team/app/blobs/" + d.String())
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if n != size {
				b.Fatalf("pulled %d bytes", n)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			a := startAgent(b, testConfig(b, o.URL, []string{seeder.addr}, nil))
			b.StartTimer()
			pull(b, a)
			b.StopTimer()
			a.shutdown()
			b.StartTimer()
		}
	})
	b.Run("warm", func(b *testing.B) {
		a := startAgent(b, testConfig(b, o.URL, []string{seeder.addr}, nil))
		pull(b, a)
		b.SetBytes(size)
		for b.Loop() {
			pull(b, a)
		}
	})
}

// BenchmarkGRPCStreamCeiling is what one Exchange stream carries on this
// machine with nothing else to do: a server sending 1 GiB in 1 MiB
// PieceChunks, a client receiving and dropping them, both with the agent's
// flow-control windows. No hashing, no disk, no HTTP client: the ceiling
// of a cold pull from a single seeder (docs/benchmarks.md).
//
//	go test -run '^$' -bench GRPCStreamCeiling -benchtime 3x ./pkg/peer/agent/
func BenchmarkGRPCStreamCeiling(b *testing.B) {
	const total, chunk = 1 << 30, 1 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer(grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow))
	peerpb.RegisterPeerServer(gs, chunkSender{total: total, chunk: chunk})
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	b.SetBytes(total)
	for b.Loop() {
		st, err := peerpb.NewPeerClient(cc).Exchange(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Send(&peerpb.Message{}); err != nil {
			b.Fatal(err)
		}
		var got int64
		for {
			m, err := st.Recv()
			if err != nil {
				break
			}
			got += int64(len(m.GetChunk().GetData()))
		}
		if got != total {
			b.Fatalf("received %d bytes, want %d", got, total)
		}
	}
}

// chunkSender answers an Exchange with total bytes of chunks.
type chunkSender struct {
	peerpb.UnimplementedPeerServer
	total, chunk int
}

func (s chunkSender) Exchange(st grpc.BidiStreamingServer[peerpb.Message, peerpb.Message]) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	buf := make([]byte, s.chunk)
	for off := 0; off < s.total; off += s.chunk {
		if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Chunk{Chunk: &peerpb.PieceChunk{
			Index: 0, Offset: int64(off), Data: buf}}}); err != nil {
			return err
		}
	}
	return nil
}
