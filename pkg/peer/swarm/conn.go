package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/piecestore"
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
// piece store (upload) and, while attached to the blob's download, carries
// the download's requests and delivers the peer's pieces to it.
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
	// (incarnationHeader); empty when it sent none (an origin, an older
	// agent).
	incarnation string
	// cancel ends a client stream; nil on the server side, whose stream
	// ends when the handler returns.
	cancel  context.CancelFunc
	release func()
	log     *slog.Logger
	// pw carries this side's requests and the peer's pieces when the peer
	// serves the piece data path (internal/piecewire); nil: the stream
	// does. Set before run; cleared (under mu) when it ends quietly.
	pw *piecewire.Conn

	closed    chan struct{}
	closeOnce sync.Once
	wake      chan struct{}
	// verifying bounds the pieces being verified and written at once.
	verifying chan struct{}

	mu   sync.Mutex
	dl   *download // nil while not attached
	left bool      // the download was told the peer left
	// remote is the peer's pieces, from its handshake and Haves.
	remote *metainfo.Bitfield
	// requested are this side's outstanding requests to the peer; chunks
	// of any other piece are discarded (cancelled, or never asked for).
	requested  map[int]bool
	assembling map[int][]byte
	// progressAt is when the download was last told that chunks arrive
	// (at most every progressEvery).
	progressAt time.Time
	// takeback lets an origin piece the scheduler took back finish once
	// half of it arrived, and holds requests to the origin back until it
	// has (used for origins only).
	takeback scheduler.OriginTakeback
	control  []*peerpb.Message
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
		requested:  make(map[int]bool),
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

// request asks the peer for piece i. Requests to an origin wait while a
// piece the scheduler took back is still arriving from it
// (scheduler.OriginTakeback).
func (c *conn) request(i int) {
	c.mu.Lock()
	if c.origin && !c.takeback.Request(i) {
		c.mu.Unlock()
		return
	}
	c.requested[i] = true
	pw := c.pw
	if pw == nil {
		c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: uint32(i)}}})
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	if err := pw.Request(i); err != nil {
		// Called from the download's loop: close posts to it.
		go c.close(fmt.Errorf("requesting piece %d on the piece connection: %w", i, err))
	}
}

// cancelRequest withdraws the request of piece i; chunks of it still in
// flight are discarded. An origin piece at least half received is let
// finish instead, and a request still held back never went out
// (scheduler.OriginTakeback).
func (c *conn) cancelRequest(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.origin {
		buf, started := c.assembling[i]
		if c.takeback.Cancel(i, started, int64(len(buf)), c.meta.PieceSize(i)) != scheduler.CancelCut {
			return
		}
	}
	delete(c.requested, i)
	delete(c.assembling, i)
	if c.pw != nil {
		_ = c.pw.Cancel(i) // a failure ends the piece connection, and pieceLoop the conn
		return
	}
	c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Cancel{Cancel: &peerpb.Cancel{Index: uint32(i)}}})
}

// pieceEndedLocked notes that piece i is no longer on the wire (received,
// rejected or broken) and sends the held requests once no piece the
// scheduler took back is still arriving.
func (c *conn) pieceEndedLocked(i int) {
	delete(c.requested, i)
	delete(c.assembling, i)
	for _, j := range c.takeback.Ended(i) {
		c.requested[j] = true
		c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: uint32(j)}}})
	}
}

// have tells the peer this side now holds piece i, unless it holds it too.
func (c *conn) have(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.remote.Has(i) {
		return
	}
	c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Have{Have: &peerpb.Have{Index: uint32(i)}}})
}

// attach makes dl the download this conn delivers to and returns the
// peer's pieces at that moment; Haves after it go to dl as events.
func (c *conn) attach(dl *download) *metainfo.Bitfield {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dl = dl
	bf, _ := metainfo.ParseBitfield(c.remote.Bytes(), c.remote.Len())
	return bf
}

// detach stops delivering to the download: outstanding requests are
// forgotten and their chunks discarded.
func (c *conn) detach() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dl = nil
	c.left = true
	if c.pw != nil {
		// Pieces on their way would be discarded on arrival.
		for i := range c.requested {
			_ = c.pw.Cancel(i)
		}
	}
	clear(c.requested)
	clear(c.assembling)
	c.takeback.Reset()
}

// remoteComplete reports whether the peer holds every piece.
func (c *conn) remoteComplete() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.remote.Complete()
}

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
// handler returns).
func (c *conn) run() {
	if c.pw != nil {
		go c.pieceLoop(c.pw)
	}
	go c.recvLoop()
	err := c.sendLoop()
	c.close(err)
}

func (c *conn) sendLoop() error {
	ctx := c.stream.Context()
	// The piece being uploaded is read from the store a chunk at a time,
	// so a stream holds 256 KiB rather than a whole piece. One buffer per
	// stream, reused: Send marshals the message into gRPC's own buffers
	// before it returns, and nothing here installs the stats handlers or
	// tracing that the gRPC docs warn may read a message later (the origin
	// seeder reuses its chunk buffers the same way). A fresh buffer per
	// chunk cost 50 agents ~12 GiB of allocation and zeroing per 256 MiB
	// layer.
	chunk := make([]byte, chunkSize)
	var src *piecestore.Reader
	defer func() {
		if src != nil {
			src.Close()
		}
	}()
	idx := -1
	var off, size int64
	stop := func() {
		src.Close()
		src = nil
		c.mu.Lock()
		c.current, c.abort = -1, false
		c.addPendingLocked(-(size - off))
		c.mu.Unlock()
	}
	for {
		select {
		case <-c.closed:
			return nil
		default:
		}
		c.mu.Lock()
		if len(c.control) > 0 {
			msgs := c.control
			c.control = nil
			c.mu.Unlock()
			for _, m := range msgs {
				if err := c.stream.Send(m); err != nil {
					return fmt.Errorf("sending to peer: %w", err)
				}
			}
			continue
		}
		abort := c.abort
		if src == nil && len(c.uploads) == 0 {
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-c.closed:
				return nil
			}
			continue
		}
		if src == nil {
			idx = c.uploads[0]
			c.uploads = c.uploads[1:]
			c.current, c.abort = idx, false
		}
		c.mu.Unlock()
		if src != nil && abort {
			stop()
			continue
		}
		if src == nil {
			r, err := c.openPiece(idx)
			if err != nil {
				c.mu.Lock()
				c.addPendingLocked(-c.meta.PieceSize(idx))
				c.mu.Unlock()
				c.reject(idx)
				continue
			}
			src, off, size = r, 0, c.meta.PieceSize(idx)
		}
		n := min(chunkSize, size-off)
		if c.s.egress != nil {
			if err := c.s.egress.WaitN(ctx, int(n)); err != nil {
				return fmt.Errorf("waiting for egress bandwidth: %w", err)
			}
		}
		buf := chunk[:n]
		if _, err := io.ReadFull(src, buf); err != nil {
			c.log.Debug("reading a piece to upload", "piece", idx, "err", err)
			stop()
			c.reject(idx) // the peer drops what it assembled
			continue
		}
		m := &peerpb.Message{Msg: &peerpb.Message_Chunk{Chunk: &peerpb.PieceChunk{
			Index: uint32(idx), Offset: off, Data: buf}}}
		if err := c.stream.Send(m); err != nil {
			return fmt.Errorf("sending piece %d to peer: %w", idx, err)
		}
		c.s.metrics.uploaded.Add(float64(n))
		c.s.up.Sent(n, time.Now())
		c.mu.Lock()
		c.addPendingLocked(-n)
		c.mu.Unlock()
		off += n
		if off == size {
			stop()
		}
	}
}

// openPiece returns a reader of piece i, which must be held: a reader of a
// piece not held would wait for it.
func (c *conn) openPiece(i int) (*piecestore.Reader, error) {
	have, err := c.s.store.Have(c.bs.d)
	if err != nil {
		return nil, err
	}
	if !have.Has(i) {
		return nil, piecestore.ErrPieceMissing
	}
	return c.s.store.Reader(c.s.ctx, c.bs.d, c.meta.PieceOffset(i))
}

// reject tells the peer piece i is not held here (evicted, or never).
func (c *conn) reject(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.current = -1
	c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Reject{Reject: &peerpb.Reject{
		Index: uint32(i), Reason: peerpb.Reject_REASON_NOT_HELD}}})
}

func (c *conn) recvLoop() {
	for {
		m, err := c.stream.Recv()
		if err != nil {
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
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case c.current == i || slices.Contains(c.uploads, i):
		case len(c.uploads) >= c.s.cfg.MaxQueuedUploads,
			c.s.up.Wait(c.meta.PieceSize(i)) > c.s.cfg.PieceTimeout/2:
			// A full queue, or more accepted than this host's uplink
			// sends before the requester would time out (see
			// addPendingLocked).
			c.s.metrics.uploadsRefused.Inc()
			c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Reject{Reject: &peerpb.Reject{
				Index: uint32(i), Reason: peerpb.Reject_REASON_BUSY}}})
		default:
			c.uploads = append(c.uploads, i)
			c.addPendingLocked(c.meta.PieceSize(i))
			c.signal()
		}
	case *peerpb.Message_Cancel:
		i := int(msg.Cancel.GetIndex())
		c.mu.Lock()
		defer c.mu.Unlock()
		if slices.Contains(c.uploads, i) {
			c.uploads = slices.DeleteFunc(c.uploads, func(u int) bool { return u == i })
			c.addPendingLocked(-c.meta.PieceSize(i))
		}
		if c.current == i {
			c.abort = true
		}
	case *peerpb.Message_Have:
		i := int(msg.Have.GetIndex())
		if i >= n {
			return fmt.Errorf("%w: have of piece %d of %d", errProtocol, i, n)
		}
		c.mu.Lock()
		c.remote.Set(i)
		dl := c.dl
		c.mu.Unlock()
		if dl != nil {
			dl.post(evHave{c: c, piece: i}, c.closed)
		}
	case *peerpb.Message_Reject:
		i := int(msg.Reject.GetIndex())
		if i >= n {
			return fmt.Errorf("%w: reject of piece %d of %d", errProtocol, i, n)
		}
		c.rejected(i, msg.Reject.GetReason(), time.Duration(msg.Reject.GetRetryAfterMs())*time.Millisecond)
	case *peerpb.Message_Chunk:
		return c.chunk(msg.Chunk)
	case *peerpb.Message_Handshake:
		return fmt.Errorf("%w: a second handshake", errProtocol)
	default:
		return fmt.Errorf("%w: unknown message %T", errProtocol, m.Msg)
	}
	return nil
}

// rejected handles the peer's refusal of this side's request of piece i.
func (c *conn) rejected(i int, reason peerpb.Reject_Reason, retryAfter time.Duration) {
	c.mu.Lock()
	asked := c.requested[i] && !c.takeback.Continuing(i)
	c.pieceEndedLocked(i)
	dl := c.dl
	if reason == peerpb.Reject_REASON_NOT_HELD {
		c.remote.Clear(i)
	}
	c.mu.Unlock()
	if dl != nil && asked {
		ev := evRejected{c: c, piece: i}
		switch reason {
		case peerpb.Reject_REASON_NOT_HELD:
			ev.notHeld = true
		case peerpb.Reject_REASON_AT_PEERS:
			ev.atPeers = true
			ev.retryAfter = retryAfter
		}
		dl.post(ev, c.closed)
	}
}

// chunk adds a piece chunk; a complete piece is verified and written by the
// piece store, and the result goes to the download.
func (c *conn) chunk(ch *peerpb.PieceChunk) error {
	i := int(ch.GetIndex())
	data := ch.GetData()
	if len(data) > maxChunk {
		return fmt.Errorf("%w: a chunk of %d bytes, more than %d", errProtocol, len(data), maxChunk)
	}
	if c.s.ingress != nil {
		if err := c.s.ingress.WaitN(c.stream.Context(), len(data)); err != nil {
			return fmt.Errorf("waiting for ingress bandwidth: %w", err)
		}
	}
	c.mu.Lock()
	if !c.requested[i] {
		c.mu.Unlock()
		c.s.metrics.discarded.WithLabelValues(c.source()).Add(float64(len(data)))
		return nil
	}
	size := c.meta.PieceSize(i)
	buf, started := c.assembling[i]
	if !started && ch.GetOffset() != 0 {
		// The tail of an earlier answer for this piece, cancelled and asked
		// for again: a stream keeps order, so it comes before the new
		// answer's first chunk. Late, not corrupt.
		c.mu.Unlock()
		c.s.metrics.discarded.WithLabelValues(c.source()).Add(float64(len(data)))
		return nil
	}
	if !started {
		buf = c.s.store.PieceBuffer(size)
	}
	if ch.GetOffset() != int64(len(buf)) || int64(len(buf)+len(data)) > size {
		dl := c.dl
		c.pieceEndedLocked(i)
		c.mu.Unlock()
		// A piece that cannot be assembled is as bad as one that does not
		// verify.
		if dl != nil {
			dl.post(evPiece{c: c, piece: i, err: fmt.Errorf("%w: chunk at %d of piece %d, have %d of %d bytes: %w",
				errProtocol, ch.GetOffset(), i, len(buf), size, metainfo.ErrCorruptPiece)}, c.closed)
		}
		return nil
	}
	buf = append(buf, data...)
	if int64(len(buf)) < size {
		c.assembling[i] = buf
		dl, now := c.dl, time.Now()
		report := dl != nil && now.Sub(c.progressAt) >= progressEvery
		if report {
			c.progressAt = now
		}
		c.mu.Unlock()
		if report {
			dl.progress(c)
		}
		return nil
	}
	c.pieceEndedLocked(i)
	dl := c.dl
	c.mu.Unlock()
	if dl == nil {
		return nil
	}
	c.store(dl, i, buf)
	return nil
}

// store verifies and writes piece i, received whole in buf, and tells dl.
// Verifying and writing a 4 MiB piece takes longer than receiving it;
// done on the receiving goroutine, it would stall the peer (flow control)
// for each piece. Up to cap(c.verifying) pieces are checked while the
// next arrive.
func (c *conn) store(dl *download, i int, buf []byte) {
	select {
	case c.verifying <- struct{}{}:
	case <-c.closed:
		c.s.store.PutPieceBuffer(buf)
		return
	}
	go func() {
		defer func() { <-c.verifying }()
		n := len(buf)
		// The store owns buf from here: it keeps the newest pieces in
		// memory for readers and uploads.
		err := c.s.store.WritePieceBuffer(c.bs.d, i, buf)
		dl.post(evPiece{c: c, piece: i, size: n, err: err}, c.closed)
	}()
}
