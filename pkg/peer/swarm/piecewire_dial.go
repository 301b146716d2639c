package swarm

// Opening a stream's piece connection: both ends of a stream whose peer
// named its piece port dial it (the opener at the host it dialed, the
// accepting side at the stream's remote address), so that pieces flow
// over the piece data path whichever way they go. Without the dial back,
// about half a swarm's piece bytes would stay on the streams.
//
// The dial waits for the download to accept the peer (a refused peer gets
// no piece connection to keep idle) and runs beside the stream, not before
// it: requests made meanwhile wait for it up to pieceDialGrace, then go on
// the stream, which answers them as it answers a peer without a piece port.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// pieceDialGrace is how long a joined peer's requests wait for its piece
// connection before they go on the stream. A reachable piece port answers
// within a round trip or two (TCP, then TLS 1.3), so waiting keeps the
// first pieces off gRPC; an unreachable one (a firewall dropping the port)
// costs this once per stream rather than DialTimeout. A refused port ends
// the wait at once.
const pieceDialGrace = 250 * time.Millisecond

// route is the path a request of this side went out on.
type route uint8

const (
	// viaStream: a Request message on the stream, answered with chunks.
	viaStream route = iota + 1
	// viaPieces: a request on the piece connection.
	viaPieces
	// viaDial: held until the piece connection is up (or the wait is
	// over, then on the stream); nothing went out yet.
	viaDial
)

// pieceAddrBack is the piece server address of an incoming stream's peer:
// the port it named in md at the stream's remote address.
func (s *Swarm) pieceAddrBack(ctx context.Context, md metadata.MD) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return ""
	}
	return s.pieceAddr(host, md)
}

// connectPieces dials the peer's piece port (c.pieceAddr, if it named one)
// for a conn the download just accepted, on a goroutine of its own;
// requests meanwhile wait for it (see pieceDialGrace). Called from the
// download's loop, before the peer's first requests.
func (c *conn) connectPieces() {
	if c.pieceAddr == "" {
		return
	}
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.DialTimeout)
	c.mu.Lock()
	select {
	case <-c.closed:
		c.mu.Unlock()
		cancel()
		return
	default:
	}
	if c.pw != nil || c.stopDial != nil {
		c.mu.Unlock()
		cancel()
		return
	}
	c.stopDial = cancel
	c.holding = true
	c.mu.Unlock()
	late := time.AfterFunc(c.s.pieceGrace, func() { c.piecesLate() })
	go func() {
		defer cancel()
		pw := c.s.dialPieces(ctx, c.meta, c.pieceAddr, c.id, c.receiving)
		late.Stop()
		c.usePieceConn(pw)
	}()
}

// piecesLate sends the requests held for a piece connection that is not
// up after pieceDialGrace on the stream; later ones go there too until it
// is up.
func (c *conn) piecesLate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releaseHeldLocked(nil)
}

// usePieceConn gives c the piece connection pw, or none (nil: the dial
// failed): requests held for it go out, on it or on the stream, and later
// ones follow them. A conn closed meanwhile does not get it: pw is closed
// here instead (close closes c.pw under mu after closing c.closed). Nor
// does one the download let go (detach cancels the dial, but a dial that
// connected first returns all the same): no request would use it.
func (c *conn) usePieceConn(pw *piecewire.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		if pw != nil {
			_ = pw.Close()
		}
		return
	default:
	}
	if pw != nil && c.left {
		_ = pw.Close()
		pw = nil
	}
	if pw != nil {
		c.pw = pw
		go c.pieceLoop(pw)
	}
	c.releaseHeldLocked(pw)
}

// releaseHeldLocked ends the wait for the piece connection: the requests
// held for it go on pw, or on the stream when pw is nil.
func (c *conn) releaseHeldLocked(pw *piecewire.Conn) {
	held := c.dialHeld
	c.holding, c.dialHeld = false, nil
	for _, i := range held {
		if c.requested[i] != viaDial {
			continue
		}
		if pw == nil {
			c.requested[i] = viaStream
			c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: uint32(i)}}})
			continue
		}
		c.requested[i] = viaPieces
		c.requestOnPiecesLocked(pw, i)
	}
}

// requestOnPiecesLocked sends this side's request of piece i, routed to
// the piece connection pw, on it. A request still live there (asked again
// after a cancel by pieceLoop and by the download at once) is left as it
// is. On a piece connection with as many requests outstanding as it takes
// (cancelled ones wait there for their answers, behind a slow piece) the
// request goes on the stream instead. A failure that ends pw, the peer
// having closed it, is pieceLoop's to handle: it sees the end and moves
// the requests outstanding on pw to the stream, or ends the conn. Any
// other ends the conn.
func (c *conn) requestOnPiecesLocked(pw *piecewire.Conn, i int) {
	err := pw.Request(i)
	switch {
	case err == nil, errors.Is(err, piecewire.ErrRequested):
	case errors.Is(err, piecewire.ErrFull):
		c.requested[i] = viaStream
		c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: uint32(i)}}})
	case errors.Is(err, piecewire.ErrClosedByServer), pw.Err() != nil:
	default:
		// close takes mu.
		go c.close(fmt.Errorf("requesting piece %d on the piece connection: %w", i, err))
	}
}

// routeLocked records this side's request of piece i and sends it on the
// path it takes: the piece connection (the caller sends it with
// requestOnPiecesLocked before it releases mu: the returned route is
// viaPieces), held for the one being dialed, or the stream.
func (c *conn) routeLocked(i int) route {
	r := viaStream
	switch {
	case c.pw != nil:
		r = viaPieces
	case c.holding:
		r = viaDial
		c.dialHeld = append(c.dialHeld, i)
	default:
		c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: uint32(i)}}})
	}
	c.requested[i] = r
	return r
}

// unrouteLocked withdraws this side's request of piece i from the path it
// took: a cancel on the stream or the piece connection, or nothing for one
// still held for the dial.
func (c *conn) unrouteLocked(i int) {
	r := c.requested[i]
	delete(c.requested, i)
	delete(c.assembling, i)
	switch r {
	case viaDial:
		c.dialHeld = slices.DeleteFunc(c.dialHeld, func(j int) bool { return j == i })
	case viaPieces:
		if c.pw != nil {
			_ = c.pw.Cancel(i) // a failure ends the piece connection, and pieceLoop the conn
		}
	case viaStream:
		c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Cancel{Cancel: &peerpb.Cancel{Index: uint32(i)}}})
	}
}

// onPiecesLocked counts the requests outstanding on the piece connection.
func (c *conn) onPiecesLocked() int {
	n := 0
	for _, r := range c.requested {
		if r == viaPieces {
			n++
		}
	}
	return n
}
