package swarm_test

import (
	"bufio"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// A hostile peer on the piece data path: its Exchange stream is a complete
// peer's and names a piece port, and what it sends there breaks the
// protocol in one way (hostility). Every agent that takes pieces from it
// must drop it, take no byte of it, and finish its pull from the others.

// hostility is how a hostile piece server answers a request of piece i.
type hostility func(w io.Writer, m *metainfo.Metainfo, i int, requested map[int]bool) error

var hostilities = map[string]hostility{
	// A frame longer than it announced: a reject followed by bytes past
	// its end, read as a frame of an unknown type.
	"frame longer than announced": func(w io.Writer, _ *metainfo.Metainfo, i int, _ map[int]bool) error {
		b, err := piecewire.AppendFrame(nil, piecewire.Frame{Type: piecewire.FrameReject, Index: uint32(i), Reason: piecewire.ReasonBusy})
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, 0x7f, 0, 0, 0, 1, 0))
		return err
	},
	// A piece cut short: its header, half of its bytes, then the end.
	"truncated frame": func(w io.Writer, m *metainfo.Metainfo, i int, _ map[int]bool) error {
		if err := writePieceHeader(w, i, m.PieceSize(i)); err != nil {
			return err
		}
		if err := writeRandom(w, m.PieceSize(i)/2); err != nil {
			return err
		}
		return errors.New("cut")
	},
	// A piece of the right size that nobody asked this connection for.
	"frame for a piece never requested": func(w io.Writer, m *metainfo.Metainfo, i int, requested map[int]bool) error {
		j := 0
		for requested[j] && j < m.NumPieces()-1 {
			j++
		}
		if err := writePieceHeader(w, j, m.PieceSize(j)); err != nil {
			return err
		}
		return writeRandom(w, m.PieceSize(j))
	},
}

func writePieceHeader(w io.Writer, i int, size int64) error {
	b, err := piecewire.AppendFrame(nil, piecewire.Frame{Type: piecewire.FramePiece, Index: uint32(i), Length: uint32(size)})
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func writeRandom(w io.Writer, n int64) error {
	_, err := io.CopyN(w, rand.Reader, n)
	return err
}

// hostilePiecePeer serves shoal.peer.v1 Exchange as a peer holding every
// piece of its blob, naming the port of a piece server that answers with
// its hostility. Requests on the stream go unanswered.
type hostilePiecePeer struct {
	peerpb.UnimplementedPeerServer
	id        string
	meta      *metainfo.Metainfo
	hostility hostility
	piecePort string
	// requests counts the requests its piece server got.
	requests atomic.Int64
}

func (p *hostilePiecePeer) Exchange(stream grpc.BidiStreamingServer[peerpb.Message, peerpb.Message]) error {
	if err := stream.SendHeader(metadata.Pairs(peerwire.PieceHeader, p.piecePort)); err != nil {
		return err
	}
	if err := handshakeAsComplete(stream, p.id, p.meta); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}

// servePieces answers one piece connection with p's hostility.
func (p *hostilePiecePeer) servePieces(nc net.Conn) {
	defer nc.Close()
	br := bufio.NewReader(nc)
	var pre [len(piecewire.Preface)]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		return
	}
	requested := map[int]bool{}
	for {
		f, err := piecewire.ReadFrame(br)
		if err != nil {
			return
		}
		if f.Type != piecewire.FrameRequest || int(f.Index) >= p.meta.NumPieces() {
			continue
		}
		requested[int(f.Index)] = true
		p.requests.Add(1)
		if err := p.hostility(nc, p.meta, int(f.Index), requested); err != nil {
			return
		}
	}
}

// startHostilePiecePeer serves p's Exchange and piece server on 127.0.0.1
// until the test ends and returns its Exchange address.
func startHostilePiecePeer(t *testing.T, p *hostilePiecePeer) string {
	t.Helper()
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.piecePort = strconv.Itoa(pl.Addr().(*net.TCPAddr).Port)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			nc, err := pl.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.servePieces(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		pl.Close()
		mu.Lock()
		for _, nc := range conns {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return servePeer(t, p)
}

// TestPullsCompleteDespitePeersBreakingThePieceDataPath: three peers, each
// announced as holding the whole layer, answer requests on their piece
// connections with a frame longer than announced, a truncated frame, and
// a frame for a piece never requested. The agents drop them and pull the
// layer whole from the others (checkPulls checks every digest).
func TestPullsCompleteDespitePeersBreakingThePieceDataPath(t *testing.T) {
	c := startCluster(t, clusterOptions{origins: 1, agents: faultAgents, agentConfig: faultConfig})
	l := c.pushLayer("library/hostilepieces", faultLayerSize)
	m := getMetainfo(t, c.origins[0], l)
	peers := map[string]*hostilePiecePeer{}
	for name, h := range hostilities {
		p := &hostilePiecePeer{id: "hostile-" + name, meta: m, hostility: h}
		peers[name] = p
		announceAsComplete(t, c.tracker.GRPCAddr, p.id, startHostilePiecePeer(t, p), l)
	}

	c.checkPulls(c.startPulls(allIndexes(faultAgents), l).wait(), l)
	for name, p := range peers {
		t.Logf("the peer sending a %s got %d requests on its piece connections", name, p.requests.Load())
		if p.requests.Load() == 0 {
			t.Errorf("no agent asked the peer sending a %s for a piece on its piece port: the test proved nothing", name)
		}
	}
}
