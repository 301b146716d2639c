package swarm

// The download half of a conn: this side's requests to the peer (with the
// origin take-back rule, scheduler.OriginTakeback), the peer's Haves and
// rejects, and its pieces assembled, verified and handed to the download.

import (
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/scheduler"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// request asks the peer for piece i, on the piece connection, the stream,
// or once the piece connection being dialed is up (routeLocked). Requests
// to an origin wait while a piece the scheduler took back is still
// arriving from it (scheduler.OriginTakeback).
func (c *conn) request(i int) {
	c.mu.Lock()
	if c.origin && !c.takeback.Request(i) {
		c.mu.Unlock()
		return
	}
	if c.routeLocked(i) == viaPieces {
		// Under mu, as every request on the piece connection, so that
		// pieceLoop's requests do not come between the route and the
		// request. The write does not wait on the peer: the requests
		// outstanding are bounded, and their frames are far smaller than
		// the socket's buffers.
		c.requestOnPiecesLocked(c.pw, i)
	}
	c.mu.Unlock()
}

// cancelRequest withdraws the request of piece i; chunks of it still in
// flight are discarded. An origin piece at least half received is let
// finish instead, and a request still held back never went out
// (scheduler.OriginTakeback).
func (c *conn) cancelRequest(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.origin {
		received, started := c.receivedLocked(i)
		if c.takeback.Cancel(i, started, received, c.meta.PieceSize(i)) != scheduler.CancelCut {
			return
		}
	}
	c.unrouteLocked(i)
}

// receivedLocked is how much of piece i has arrived, on the path its
// request went; started: any of it at all. A piece no longer requested
// (delivered, its event on the way to the download) has nothing more to
// arrive: the piece connection still reports it whole, and letting it
// finish would hold the next requests for an end that came already.
func (c *conn) receivedLocked(i int) (received int64, started bool) {
	switch c.requested[i] {
	case viaPieces:
		if c.pw != nil {
			return c.pw.Arrived(i)
		}
	case viaStream:
		buf, started := c.assembling[i]
		return int64(len(buf)), started
	}
	return 0, false
}

// pieceEndedLocked notes that piece i is no longer on the wire (received,
// rejected or broken) and sends the held requests once no piece the
// scheduler took back is still arriving, on the path the pieces come by:
// a request on the stream while a piece connection is open would have the
// peer send the piece on the stream, past the data path.
func (c *conn) pieceEndedLocked(i int) {
	delete(c.requested, i)
	delete(c.assembling, i)
	for _, j := range c.takeback.Ended(i) {
		if c.routeLocked(j) == viaPieces {
			c.requestOnPiecesLocked(c.pw, j)
		}
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

// peerHas notes that the peer now holds piece i and tells the download.
func (c *conn) peerHas(i int) {
	c.mu.Lock()
	c.remote.Set(i)
	dl := c.dl
	c.mu.Unlock()
	if dl != nil {
		dl.post(evHave{c: c, piece: i}, c.closed)
	}
}

// attach makes dl the download this conn delivers to and returns the
// peer's pieces at that moment; Haves after it go to dl as events, and so
// does its end (evLeft). A conn that ended before is not attached (open
// false): its close found no download to tell, so the caller must not
// count the peer as joined.
func (c *conn) attach(dl *download) (bf *metainfo.Bitfield, open bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		// close shuts c.closed before it takes mu to look for the
		// download: attached now, the conn might or might not be told to
		// dl as left; left unattached, it never is, and the caller drops
		// the join.
		return nil, false
	default:
	}
	if c.ending {
		// Its stream is closing: no request would go out.
		return nil, false
	}
	c.dl = dl
	bf, _ = metainfo.ParseBitfield(c.remote.Bytes(), c.remote.Len())
	return bf, true
}

// detach stops delivering to the download: outstanding requests are
// forgotten and their chunks discarded.
func (c *conn) detach() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dl = nil
	c.left = true
	// Pieces on their way would be discarded on arrival.
	for i, r := range c.requested {
		switch {
		case r == viaPieces && c.pw != nil:
			_ = c.pw.Cancel(i)
		case r == viaStream:
			c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Cancel{Cancel: &peerpb.Cancel{Index: uint32(i)}}})
		}
	}
	if c.stopDial != nil {
		// No more requests: a piece connection would sit idle.
		c.stopDial()
	}
	clear(c.requested)
	clear(c.assembling)
	c.dialHeld = nil
	c.takeback.Reset()
}

// remoteComplete reports whether the peer holds every piece.
func (c *conn) remoteComplete() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.remote.Complete()
}

// rejected handles the peer's refusal of this side's request of piece i,
// which came by path from: a refusal of a request withdrawn since (and
// perhaps made again on the other path) ends nothing.
func (c *conn) rejected(i int, from route, reason peerpb.Reject_Reason, retryAfter time.Duration) {
	c.mu.Lock()
	if reason == peerpb.Reject_REASON_NOT_HELD {
		c.remote.Clear(i)
	}
	if c.requested[i] != from {
		c.mu.Unlock()
		return
	}
	asked := !c.takeback.Continuing(i)
	c.pieceEndedLocked(i)
	dl := c.dl
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
	if len(data) > peerwire.MaxChunk {
		return fmt.Errorf("%w: a chunk of %d bytes, more than %d", errProtocol, len(data), peerwire.MaxChunk)
	}
	if c.s.ingress != nil {
		if err := c.s.ingress.WaitN(c.stream.Context(), len(data)); err != nil {
			return fmt.Errorf("waiting for ingress bandwidth: %w", err)
		}
	}
	c.mu.Lock()
	if c.requested[i] != viaStream {
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
		dl := c.progressDueLocked()
		c.mu.Unlock()
		if dl != nil {
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

// progressDueLocked returns the download to tell that bytes of a piece
// arrive from this peer (scheduler.PeerProgress), or nil when it was told
// less than progressEvery ago (or there is none). c.mu is held.
func (c *conn) progressDueLocked() *download {
	now := time.Now()
	if c.dl == nil || now.Sub(c.progressAt) < progressEvery {
		return nil
	}
	c.progressAt = now
	return c.dl
}

// receiving reports bytes of a piece arriving on the piece connection: a
// piece that takes longer than the piece timeout on a slow or crowded
// link is not a mute peer while its bytes keep coming.
func (c *conn) receiving() {
	c.mu.Lock()
	dl := c.progressDueLocked()
	c.mu.Unlock()
	if dl != nil {
		dl.progress(c)
	}
}
