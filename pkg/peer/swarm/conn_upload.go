package swarm

// The upload half of a conn: the peer's requests queued, and sendLoop
// sending the pieces asked for from the piece store.

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/pkg/peer/piecestore"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// peerRequested queues the peer's request of piece i for upload, or
// refuses it as busy.
func (c *conn) peerRequested(i int) {
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
}

// peerCancelled withdraws the peer's request of piece i: dropped from the
// queue, or the piece being sent is aborted.
func (c *conn) peerCancelled(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Contains(c.uploads, i) {
		c.uploads = slices.DeleteFunc(c.uploads, func(u int) bool { return u == i })
		c.addPendingLocked(-c.meta.PieceSize(i))
	}
	if c.current == i {
		c.abort = true
	}
}

func (c *conn) sendLoop() error {
	ctx := c.stream.Context()
	// The piece being uploaded is read from the store a chunk at a time,
	// so a stream holds 256 KiB rather than a whole piece. One buffer per
	// stream, reused: Send marshals the message into gRPC's own buffers
	// before it returns, and nothing here installs the stats handlers or
	// tracing that the gRPC docs warn may read a message later (the origin
	// seeder reuses its chunk buffers the same way). A fresh buffer per
	// chunk would allocate and zero every byte uploaded once more. Made
	// at the first upload: with the piece data path, most streams never
	// carry a piece.
	var chunk []byte
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
		if c.ending {
			// Uploads left are dropped: close takes them off the
			// backlog.
			c.mu.Unlock()
			return c.halfClose()
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
			if chunk == nil {
				chunk = make([]byte, chunkSize)
			}
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
		c.s.metrics.uploadedStream.Add(float64(n))
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

// addPendingLocked changes the bytes this stream has accepted for upload
// and not sent (c.mu held), in the swarm's uplink meter too. It never goes
// below zero, so a send racing a close cannot leave the backlog short.
//
// The meter turns away requests this host would not send within half the
// piece timeout (see peerRequested): without it a host on a slow link
// accepts every request (one piece at a time per stream, MaxQueuedUploads
// queued per stream, dozens of streams), every upload crawls, requesters
// time out and ask again elsewhere, and the late chunks are discarded.
func (c *conn) addPendingLocked(d int64) {
	d = max(d, -c.pending)
	c.pending += d
	c.s.up.Add(d)
}
