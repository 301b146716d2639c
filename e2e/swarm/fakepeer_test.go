package swarm_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/peerpb"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// The misbehaving peers live in the test process rather than in the
// agent: the agent has no switch to corrupt what it serves, and a peer is
// exactly "something that speaks shoal.peer.v1 at the address the tracker
// hands out", so an in-test server is as real a bad peer as any.

// corruptPeer serves shoal.peer.v1 Exchange claiming every piece of the
// blobs it is asked about and answers every request with random bytes of
// the piece's size.
type corruptPeer struct {
	peerpb.UnimplementedPeerServer
	id   string
	meta *metainfo.Metainfo
	// served counts corrupt pieces sent.
	served atomic.Int64
}

// handshakeAsComplete answers an Exchange stream's handshake for the blob
// meta describes as the peer id, holding every piece.
func handshakeAsComplete(stream grpc.BidiStreamingServer[peerpb.Message, peerpb.Message], id string, meta *metainfo.Metainfo) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hs := first.GetHandshake()
	if hs == nil || hs.GetDigest() != meta.Digest.String() {
		return fmt.Errorf("%s: want a handshake for its blob", id)
	}
	return stream.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{
		Digest: hs.GetDigest(), PeerId: id, Complete: true,
	}}})
}

func (p *corruptPeer) Exchange(stream grpc.BidiStreamingServer[peerpb.Message, peerpb.Message]) error {
	if err := handshakeAsComplete(stream, p.id, p.meta); err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		req := m.GetRequest()
		if req == nil {
			continue
		}
		i := int(req.GetIndex())
		if i >= p.meta.NumPieces() {
			continue
		}
		size := p.meta.PieceSize(i)
		for off := int64(0); off < size; off += 1 << 20 {
			chunk := make([]byte, min(1<<20, size-off))
			_, _ = rand.Read(chunk)
			if err := stream.Send(&peerpb.Message{Msg: &peerpb.Message_Chunk{Chunk: &peerpb.PieceChunk{
				Index: req.GetIndex(), Offset: off, Data: chunk,
			}}}); err != nil {
				return err
			}
		}
		p.served.Add(1)
	}
}

// startCorruptPeer serves a corruptPeer on 127.0.0.1 and returns its
// address; it stops when the test ends.
func startCorruptPeer(t *testing.T, p *corruptPeer) string {
	t.Helper()
	return servePeer(t, p)
}

// servePeer serves p's Peer service (Exchange) on 127.0.0.1 until the
// test ends and returns its address.
func servePeer(t *testing.T, p peerpb.PeerServer) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	peerpb.RegisterPeerServer(s, p)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

// startSilentPeer accepts TCP connections and never writes or reads a
// byte, like a host whose process hung. It returns its address; every
// connection is closed when the test ends.
func startSilentPeer(t *testing.T) (addr string, accepted *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String(), accepted
}

// getMetainfo asks an origin seeder for a blob's metainfo, with the
// capability the origin hands out with the blob.
func getMetainfo(t *testing.T, origin *testenv.SeedingOriginServer, l layer) *metainfo.Metainfo {
	t.Helper()
	conn, err := grpc.NewClient(origin.SeederAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	tok, err := testenv.Capability(ctx, origin.URL(), l.repo, l.digest)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := peerpb.NewPeerClient(conn).GetMetainfo(auth.WithCapability(ctx, tok), &peerpb.GetMetainfoRequest{Digest: l.digest.String()})
	if err != nil {
		t.Fatalf("GetMetainfo from the origin seeder: %v", err)
	}
	m, err := metainfo.FromProto(pm)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// announceAsComplete announces addr to the tracker as an agent holding
// every piece of the layer (the best kind of peer: handed out first), and
// keeps announcing every second until the test ends.
func announceAsComplete(t *testing.T, trackerAddr, peerID, addr string, l layer) {
	t.Helper()
	conn, err := grpc.NewClient(trackerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	client := trackerpb.NewTrackerClient(conn)
	announce := func(ctx context.Context, ev trackerpb.Event) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := client.Announce(ctx, &trackerpb.AnnounceRequest{
			Digest: l.digest.String(), PeerId: peerID, Addr: addr, Complete: true, Event: ev,
		})
		return err
	}
	if err := announce(t.Context(), trackerpb.Event_EVENT_COMPLETED); err != nil {
		t.Fatalf("announcing the fake peer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = announce(ctx, trackerpb.Event_EVENT_UNSPECIFIED)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
}
