package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/scheduler"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// stream is what a conn needs of an Exchange stream, client or server side.
type stream interface {
	Send(*peerpb.Message) error
	Recv() (*peerpb.Message, error)
	Context() context.Context
}

// errProtocol marks a peer that broke the protocol: it is treated like one
// that sent a corrupt piece.
var errProtocol = errors.New("peer protocol violation")

// conn is one Exchange stream with a peer about one blob, after the
// handshakes. It is symmetric: it answers the peer's requests from the
// piece store (upload, conn_upload.go) and, while attached to the blob's
// download, carries the download's requests and delivers the peer's pieces
// to it (conn_download.go).
//
// Two goroutines run it: sendLoop owns stream.Send (control messages
// first, then chunks of the piece being uploaded) and recvLoop owns
// stream.Recv. The download's event loop talks to it only through methods
// that queue and return at once.
type conn struct {
	s        *Swarm
	bs       *blobState
	meta     *metainfo.Metainfo
	stream   stream
	id       string // the peer's id, from its handshake
	addr     string // dialed address; empty for incoming streams
	origin   bool
	outgoing bool
	// incarnation is the peer's process id, from its stream's metadata
	// (peerwire.IncarnationHeader); empty when it sent none (an origin, an older
	// agent).
	incarnation string
	// cancel ends a client stream at once (the peer sees it broken); nil
	// on the server side, whose stream ends when the handler returns. A
	// normal end closes this side first (end).
	cancel  context.CancelFunc
	release func()
	log     *slog.Logger
	// pieceAddr is the peer's piece server, dialed once the download
	// accepts the peer (connectPieces); "" when it named none. Set before
	// the conn's join is posted.
	pieceAddr string

	closed    chan struct{}
	closeOnce sync.Once
	wake      chan struct{}
	// verifying bounds the pieces being verified and written at once.
	verifying chan struct{}

	// mu guards the fields below. Lock order: mu may be held while
	// taking the uplink meter's lock (Swarm.up, in addPendingLocked and
	// peerRequested) and the piece connection's (pw.Arrived, pw.Cancel,
	// pw.Close, pw.Err, and pw.Request: every request on the piece
	// connection is sent under mu, requestOnPiecesLocked);
	// never while taking Swarm.mu, nor Swarm.mu while taking it (close and
	// broadcastHave take one after releasing the other); and never while
	// posting to the download's loop, which calls in here and may be
	// waiting for mu.
	mu sync.Mutex
	// pw carries this side's requests and the peer's pieces when the peer
	// serves the piece data path (internal/piecewire); nil: the stream
	// does. Set once dialed (usePieceConn); cleared when it ends quietly.
	pw *piecewire.Conn
	// stopDial cancels the piece connection's dial (nil: none started);
	// while holding, requests wait for it in dialHeld (viaDial).
	stopDial context.CancelFunc
	holding  bool
	dialHeld []int
	dl       *download // nil while not attached
	left     bool      // the download was told the peer left
	// remote is the peer's pieces, from its handshake and Haves.
	remote *metainfo.Bitfield
	// requested are this side's outstanding requests to the peer, by the
	// path each went on; pieces of any other, or coming by another path,
	// are discarded (cancelled, or never asked for there).
	requested  map[int]route
	assembling map[int][]byte
	// progressAt is when the download was last told that piece bytes
	// arrive, on the stream or the piece connection (at most every
	// progressEvery).
	progressAt time.Time
	// takeback lets an origin piece the scheduler took back finish once
	// half of it arrived, and holds requests to the origin back until it
	// has (used for origins only).
	takeback scheduler.OriginTakeback
	control  []*peerpb.Message
	// ending: this side is done with the peer (end); sendLoop sends the
	// control messages queued, then closes its side of the stream.
	ending bool
	// uploads are the peer's requests not yet being sent, in order;
	// current is the one being sent (-1: none) and abort cancels it.
	uploads []int
	current int
	abort   bool
	// pending is the bytes of uploads accepted and not yet sent (queued
	// pieces and the rest of the current one), counted in Swarm.up.
	pending int64
}

// newConn returns a conn after the handshakes; Swarm.register adds it to
// its blob.
func newConn(s *Swarm, meta *metainfo.Metainfo, st stream, id string, remote *metainfo.Bitfield) *conn {
	return &conn{
		s: s, meta: meta, stream: st, id: id, remote: remote,
		log:        s.log.With("peer", id),
		closed:     make(chan struct{}),
		wake:       make(chan struct{}, 1),
		verifying:  make(chan struct{}, 2),
		requested:  make(map[int]route),
		assembling: make(map[int][]byte),
		current:    -1,
	}
}

func (c *conn) direction() string {
	if c.outgoing {
		return "outgoing"
	}
	return "incoming"
}

func (c *conn) source() string {
	if c.origin {
		return "origin"
	}
	return "peer"
}

// signal wakes sendLoop.
func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) queueLocked(m *peerpb.Message) {
	c.control = append(c.control, m)
	c.signal()
}

// end lets the peer go once this side is done with it normally (the blob
// is complete here, or the peer is not needed): the messages queued (the
// cancels of detach among them) go out, then this side of the stream and
// of the piece connection closes, and the peer's sides are read to their
// end before they are let go (drain). The peer sees a clean close
// (io.EOF), not a cancel: an origin seeder takes a broken stream for a
// crashed agent and frees, for the next agent asking, every piece it gave
// over it, which this agent holds and seeds
// (shoal_origin_seeder_superseed_grants_freed_total{reason=
// "connection_broken"}). Errors and shutdown use close. Like close, it
// does not block.
func (c *conn) end() {
	c.mu.Lock()
	c.ending = true
	c.mu.Unlock()
	c.signal()
}

// errHalfClosed is sendLoop's end after end: this side of the stream is
// closed, the peer's still being read.
var errHalfClosed = errors.New("done with the peer: stream closed on this side")

// close ends the stream. It never blocks on the download's loop for long
// and may be called from any goroutine, the loop included (which detaches
// the conn first).
func (c *conn) close(why error) {
	c.closeOnce.Do(func() {
		close(c.closed)
		if c.cancel != nil {
			c.cancel()
		}
		c.mu.Lock()
		if c.stopDial != nil {
			c.stopDial()
		}
		if c.pw != nil {
			_ = c.pw.Close()
		}
		dl := c.dl
		c.dl = nil
		tell := dl != nil && !c.left
		c.left = true
		c.addPendingLocked(-c.pending)
		c.mu.Unlock()
		c.s.mu.Lock()
		registered := false
		if c.bs != nil {
			_, registered = c.bs.conns[c]
			delete(c.bs.conns, c)
			if registered && !c.outgoing {
				c.bs.incoming--
			}
		}
		c.s.mu.Unlock()
		if registered {
			c.s.metrics.connections.WithLabelValues(c.direction()).Dec()
		}
		if c.release != nil {
			c.release()
		}
		c.log.Debug("peer stream closed", "direction", c.direction(), "why", why)
		if tell {
			dl.post(evLeft{c: c}, nil)
		}
	})
}

// run serves the stream until it ends: recvLoop in a goroutine, sendLoop in
// the caller's (the server handler's, so that no Send happens after the
// handler returns). The piece connection's loop is started by
// usePieceConn, which gives c its piece connection.
func (c *conn) run() {
	received := make(chan struct{})
	go func() {
		defer close(received)
		c.recvLoop()
	}()
	err := c.sendLoop()
	c.mu.Lock()
	ending := c.ending
	c.mu.Unlock()
	if ending {
		c.drain(received, errors.Is(err, errHalfClosed))
	}
	c.close(err)
}

// drain waits, after end, for the peer to end what this side closed
// cleanly: the stream, when this side half-closed it (received: recvLoop
// returned), and the piece connection, closed the same way here
// (piecewire.Conn.CloseWrite: the peer writes the piece it is sending to
// the end rather than into a broken connection). A peer that does not
// within a piece timeout is cut off.
func (c *conn) drain(received <-chan struct{}, halfClosed bool) {
	c.mu.Lock()
	pw := c.pw
	c.mu.Unlock()
	var pieces <-chan struct{}
	if pw != nil && pw.CloseWrite() == nil {
		pieces = pw.Done()
	}
	if !halfClosed {
		received = nil
	}
	t := time.NewTimer(c.s.cfg.PieceTimeout)
	defer t.Stop()
	for received != nil || pieces != nil {
		select {
		case <-received:
			received = nil
		case <-pieces:
			pieces = nil
		case <-t.C:
			return
		case <-c.closed:
			return
		}
	}
}

// halfClose closes this side of an outgoing stream (errHalfClosed); a
// server side's ends when its handler returns (nil).
func (c *conn) halfClose() error {
	cs, ok := c.stream.(interface{ CloseSend() error })
	if !ok {
		return nil
	}
	if err := cs.CloseSend(); err != nil {
		return fmt.Errorf("closing the stream: %w", err)
	}
	return errHalfClosed
}

func (c *conn) recvLoop() {
	for {
		m, err := c.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				c.mu.Lock()
				ending := c.ending
				c.mu.Unlock()
				if ending {
					return // run closes c once the piece connection has ended too
				}
				err = errors.New("the peer ended the stream")
			}
			c.close(fmt.Errorf("receiving from peer: %w", err))
			return
		}
		if err := c.handle(m); err != nil {
			c.log.Warn("dropping peer", "err", err)
			c.close(err)
			return
		}
	}
}

// handle processes one message from the peer.
func (c *conn) handle(m *peerpb.Message) error {
	n := c.meta.NumPieces()
	switch msg := m.Msg.(type) {
	case *peerpb.Message_Request:
		i := int(msg.Request.GetIndex())
		if i >= n {
			return fmt.Errorf("%w: request of piece %d of %d", errProtocol, i, n)
		}
		c.peerRequested(i)
	case *peerpb.Message_Cancel:
		c.peerCancelled(int(msg.Cancel.GetIndex()))
	case *peerpb.Message_Have:
		i := int(msg.Have.GetIndex())
		if i >= n {
			return fmt.Errorf("%w: have of piece %d of %d", errProtocol, i, n)
		}
		c.peerHas(i)
	case *peerpb.Message_Reject:
		i := int(msg.Reject.GetIndex())
		if i >= n {
			return fmt.Errorf("%w: reject of piece %d of %d", errProtocol, i, n)
		}
		c.rejected(i, viaStream, msg.Reject.GetReason(), time.Duration(msg.Reject.GetRetryAfterMs())*time.Millisecond)
	case *peerpb.Message_Chunk:
		return c.chunk(msg.Chunk)
	case *peerpb.Message_Handshake:
		return fmt.Errorf("%w: a second handshake", errProtocol)
	default:
		return fmt.Errorf("%w: unknown message %T", errProtocol, m.Msg)
	}
	return nil
}
