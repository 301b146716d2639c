package swarm

import (
	"bytes"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// TestStreamArrivingWhileTheDownloadPreparesDialsBack: a peer may open a
// stream as soon as the blob's metainfo is in the piece store, while the
// download that put it there is still preparing and has none of its own.
// The piece connection dialed back to the peer is for the blob all the
// same, and carries pieces (it was opened without metainfo, and the first
// request on it panicked).
func TestStreamArrivingWhileTheDownloadPreparesDialsBack(t *testing.T) {
	s, key := newPieceSwarm(t, "127.0.0.1:0")
	data, m := holdPieces(t, s, 4)
	tok, err := key.IssueCapability(m.Digest, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.grant(m.Digest, tok)
	// A download whose loop has not set its metainfo yet, as while
	// prepare runs.
	s.mu.Lock()
	bs := s.blobLocked(m.Digest)
	dl := newDownload(s, bs)
	bs.dl = dl
	s.mu.Unlock()
	t.Cleanup(func() {
		s.mu.Lock()
		bs.dl = nil
		s.mu.Unlock()
		close(dl.done)
	})

	// The peer's piece server, holding the whole blob.
	gate := make(chan struct{})
	close(gate)
	src := &gatedSource{data: data, meta: m, gate: gate, opened: make(chan int, 8)}
	_, piecePort, _ := net.SplitHostPort(servePieces(t, src, key))

	// The peer opens a stream to s, naming its piece port.
	g := grpc.NewServer()
	s.Register(g)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(gl) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx := metadata.AppendToOutgoingContext(auth.WithCapability(t.Context(), tok), peerwire.PieceHeader, piecePort)
	st, err := peerpb.NewPeerClient(cc).Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all := metainfo.NewBitfield(m.NumPieces())
	all.SetAll()
	if err := st.Send(handshakeMessage(m.Digest, "the-peer", all)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("handshake reply: %v", err)
	}

	var c *conn
	select {
	case ev := <-dl.events:
		j, ok := ev.(evJoined)
		if !ok {
			t.Fatalf("the download got %#v; want the stream's join", ev)
		}
		c = j.c
	case <-time.After(eventually.Timeout):
		t.Fatal("the stream never joined the download")
	}
	c.mu.Lock()
	pw := c.pw
	c.mu.Unlock()
	if pw == nil {
		t.Fatal("no piece connection dialed back to the peer that named its piece port")
	}
	c.attach(dl)
	c.request(1)
	var got []any
	eventually.True(t, "piece 1 to arrive over the piece connection", func() bool {
		got = append(got, pieceEvents(dl)...)
		return len(got) > 0
	})
	if p, ok := got[0].(evPiece); !ok || p.piece != 1 || p.err != nil {
		t.Fatalf("the download got %#v; want piece 1, stored", got[0])
	}
	piece, err := s.store.ReadPiece(m.Digest, 1)
	if err != nil || !bytes.Equal(piece, data[m.PieceOffset(1):m.PieceOffset(1)+m.PieceSize(1)]) {
		t.Fatalf("piece 1 in the store: %d bytes, %v; want its bytes", len(piece), err)
	}
}
