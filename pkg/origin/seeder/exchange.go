package seeder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/internal/uplink"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// Exchange serves one peer's stream for one blob: to a peer presenting a
// capability for the blob (PERMISSION_DENIED otherwise, before anything is
// read) in a handshake sent within handshakeTimeout, the seeder answers the
// handshake as a peer holding every piece and then serves Requests, in the
// order they came, from the local cache (owners) or storage (other nodes).
// It never asks for pieces. Requests beyond the node's upload limit are
// rejected as busy; a Cancel stops a queued or half-sent piece.
func (s *Server) Exchange(stream peerpb.Peer_ExchangeServer) error {
	// A stream counts against its connection's cap from the start, but
	// against maxStreams only once its handshake is in and authorized:
	// connections that open streams and never speak hold no slot an
	// honest agent needs, and lose their streams at handshakeTimeout.
	conn := connOf(stream.Context())
	if !s.connStreams.take(conn) {
		s.m.refused.WithLabelValues("per_connection").Inc()
		return status.Errorf(codes.ResourceExhausted, "origin seeder: this connection already has %d open streams (maxStreamsPerConn); close some or use another connection", s.cfg.MaxStreamsPerConn)
	}
	defer s.connStreams.release(conn)
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()

	s.m.handshaking.Inc()
	first, err := peerwire.RecvWithin(stream, s.cfg.HandshakeTimeout)
	s.m.handshaking.Dec()
	if errors.Is(err, peerwire.ErrTimeout) {
		s.m.refused.WithLabelValues("handshake_timeout").Inc()
		return status.Errorf(codes.DeadlineExceeded, "origin seeder: no handshake within %s (handshakeTimeout)", s.cfg.HandshakeTimeout)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	hs := first.GetHandshake()
	if hs == nil {
		return status.Error(codes.InvalidArgument, "exchange: the first message must be a Handshake")
	}
	d, err := parseDigest(hs.GetDigest())
	if err != nil {
		return err
	}
	if err := s.checkCapability(ctx, d, "exchange"); err != nil {
		return err
	}
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		s.m.refused.WithLabelValues("max_streams").Inc()
		return status.Errorf(codes.ResourceExhausted, "origin seeder: at its limit of %d streams; try another source", s.cfg.MaxStreams)
	}
	s.m.streams.Inc()
	defer s.m.streams.Dec()
	m, err := s.metainfo(ctx, d, true)
	if err != nil {
		return toStatus(err).Err()
	}
	src := s.pieceSource(d, m.Size)
	defer src.close()
	grants := s.ledger.open(d, m.NumPieces(), m.Size)
	defer func() { s.ledger.close(d, grants, time.Now()) }()
	peer, err := s.streamPeer(ctx, hs.GetPeerId())
	if err != nil {
		return err
	}
	if peer == "" {
		peer = fmt.Sprintf("\x00stream-%d", s.anonStreams.Add(1))
	} else if !s.requireIdentity {
		// Before the piece port goes out in the header: the agent's piece
		// connection, which names no agent, counts as this one.
		if p, ok := grpcpeer.FromContext(ctx); ok {
			if host := hostOf(p.Addr); host != "" {
				defer s.streamHosts.add(d, host, peer)()
			}
		}
	}
	// The stream is a recipient of its own: should it break, the pieces
	// its agent got over its piece connection keep their windows.
	to := recipient{peer: peer, via: s.carriers.Add(1)}
	if s.owns(d) {
		s.track(d)
	}
	if s.pieces != nil {
		// Agents that speak the piece data path fetch the pieces there.
		if err := stream.SetHeader(metadata.Pairs(peerwire.PieceHeader, s.pieces.port)); err != nil {
			return err
		}
	}
	if err := stream.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{
		Digest: d.String(), PeerId: s.peerID, Complete: true,
	}}}); err != nil {
		return err
	}

	q := newRequestQueue(s.cfg.MaxQueuedRequests)
	recvErr := make(chan error, 1)
	go func() {
		err := s.receive(stream, m, q)
		if err != nil {
			// The stream is broken: drop what is queued.
			cancel()
		}
		q.close()
		recvErr <- err
	}()
	if err := s.send(ctx, stream, m, src, q, grants, to); err != nil {
		cancel()
		s.ledger.release(grants, to, time.Now())
		return err
	}
	err = <-recvErr
	if err != nil {
		// The agent vanished (killed, network gone): the pieces it was
		// given may never reach the swarm, so the next agent asking gets
		// them at once instead of after their window. A clean close (its
		// download is done) keeps the windows: it is seeding them.
		s.ledger.release(grants, to, time.Now())
	}
	return err
}

// receive reads the peer's messages until it closes its side.
func (s *Server) receive(stream peerpb.Peer_ExchangeServer, m *metainfo.Metainfo, q *requestQueue) error {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch msg := msg.GetMsg().(type) {
		case *peerpb.Message_Request:
			i := msg.Request.GetIndex()
			switch {
			case int64(i) >= int64(m.NumPieces()):
				if !q.reject(i, peerpb.Reject_REASON_NOT_HELD) {
					return status.Error(codes.ResourceExhausted, "exchange: too many requests outstanding")
				}
			case !q.push(i):
				if !q.reject(i, peerpb.Reject_REASON_BUSY) {
					return status.Error(codes.ResourceExhausted, "exchange: too many requests outstanding")
				}
			}
		case *peerpb.Message_Cancel:
			q.cancel(msg.Cancel.GetIndex())
		case *peerpb.Message_Handshake:
			return status.Error(codes.InvalidArgument, "exchange: a second Handshake on one stream")
		}
		// Have, Reject and PieceChunk are for downloaders; a seeder ignores them.
	}
}

// send answers queued requests until the queue is closed and drained, so
// that requests sent before the peer closed its side are still answered.
func (s *Server) send(ctx context.Context, stream peerpb.Peer_ExchangeServer, m *metainfo.Metainfo, src pieceSource, q *requestQueue, grants *blobLedger, to recipient) error {
	for {
		it, ok := q.next(ctx)
		if !ok {
			return ctx.Err()
		}
		if it.reject != peerpb.Reject_REASON_UNSPECIFIED {
			if err := s.sendReject(stream, it.index, it.reject); err != nil {
				return err
			}
			continue
		}
		i := int(it.index)
		wait, again := s.ledger.take(grants, i, to, time.Now())
		if wait > 0 {
			q.done(it.index)
			if err := s.sendAtPeers(stream, it.index, wait); err != nil {
				return err
			}
			continue
		}
		size := m.PieceSize(i)
		if !s.takeUploadSlot(size) {
			// At maxUploads, or this node's link would not send it within
			// maxUploadWait: the agent asks another holder, or here again
			// after its busy backoff.
			s.ledger.undo(grants, i, to)
			q.done(it.index)
			if err := s.sendReject(stream, it.index, peerpb.Reject_REASON_BUSY); err != nil {
				return err
			}
			continue
		}
		if again {
			s.m.piecesAgain.Inc()
			s.log.Debug("seeder: sending a piece again", "digest", m.Digest, "piece", i, "peer", to.peer)
		}
		s.m.uploads.Inc()
		// One chunk buffer per piece being sent, not per stream: memory is
		// bounded by maxUploads, however many streams are open.
		buf := s.chunks.Get().(*[]byte)
		snd := s.up.Start(size, time.Now())
		complete, err := s.sendPiece(ctx, stream, m, src, q, i, *buf, snd)
		snd.End(time.Now())
		s.ledger.done(grants, i, to, time.Now(), complete)
		s.chunks.Put(buf)
		s.m.uploads.Dec()
		<-s.uploads
		q.done(it.index)
		if err != nil {
			return err
		}
	}
}

// takeUploadSlot takes one of the maxUploads slots for a piece of size
// bytes, unless none is free or the node's link, at the rate measured while
// busy, would not send it within maxUploadWait. Until that rate is known,
// at most unmeasuredUploads pieces go out at once. Release it with
// <-s.uploads.
func (s *Server) takeUploadSlot(size int64) bool {
	unmeasured := false
	if s.cfg.MaxUploadWait > 0 {
		if s.up.Rate() == 0 {
			unmeasured = true
		} else if s.up.Wait(size) > s.cfg.MaxUploadWait {
			return false
		}
	}
	select {
	case s.uploads <- struct{}{}:
	default:
		return false
	}
	// Counted by the slots taken, this one's included, not by the meter's
	// sends: a piece read from storage starts its send only once read, and
	// requests coming together would all pass.
	if unmeasured && len(s.uploads) > unmeasuredUploads {
		<-s.uploads
		return false
	}
	return true
}

// unmeasuredUploads is how many pieces a node sends at once before it has
// measured its link (uplink.Meter takes its first sample after two seconds
// of sending). A swarm starting together asks for a piece per agent at
// once; taken all together on a slow link, each went out at a fraction of
// it and none reached the swarm for most of a blob's send time, while
// slow sends were cut by timeouts and sent again (docs/benchmarks.md,
// swarm). Four keep a fast link busy (each send is its own connection;
// two left a 200 Mbit/s origin short while the fetchers asking it waited
// out their busy backoff) and get a slow one's first pieces out in four
// pieces' time.
const unmeasuredUploads = 4

// sendAtPeers answers a request for a piece just given to another agent.
func (s *Server) sendAtPeers(stream peerpb.Peer_ExchangeServer, i uint32, wait time.Duration) error {
	s.m.rejects.WithLabelValues("at_peers").Inc()
	return stream.Send(&peerpb.Message{Msg: &peerpb.Message_Reject{Reject: &peerpb.Reject{
		Index: i, Reason: peerpb.Reject_REASON_AT_PEERS, RetryAfterMs: uint32(min(wait.Milliseconds()+1, math.MaxUint32)),
	}}})
}

func (s *Server) sendReject(stream peerpb.Peer_ExchangeServer, i uint32, reason peerpb.Reject_Reason) error {
	label := "busy"
	if reason == peerpb.Reject_REASON_NOT_HELD {
		label = "not_held"
	}
	s.m.rejects.WithLabelValues(label).Inc()
	return stream.Send(&peerpb.Message{Msg: &peerpb.Message_Reject{Reject: &peerpb.Reject{Index: i, Reason: reason}}})
}

// sendPiece streams piece i in chunks of at most chunkSize, telling snd of
// each as it goes, and reports whether all of it went out. A piece that
// cannot be read is rejected as not held, so the peer asks elsewhere; only
// errors of the stream itself end it.
func (s *Server) sendPiece(ctx context.Context, stream peerpb.Peer_ExchangeServer, m *metainfo.Metainfo, src pieceSource, q *requestQueue, i int, buf []byte, snd *uplink.Send) (bool, error) {
	size := m.PieceSize(i)
	r, source, err := src.open(ctx, m.PieceOffset(i), size)
	if err != nil {
		s.log.Warn("seeder: reading piece failed", "digest", m.Digest, "piece", i, "err", err)
		return false, s.sendReject(stream, uint32(i), peerpb.Reject_REASON_NOT_HELD)
	}
	defer r.Close()
	var off int64
	for off < size {
		if q.cancelled(uint32(i)) {
			return false, nil
		}
		n := min(int64(len(buf)), size-off)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			s.log.Warn("seeder: reading piece failed", "digest", m.Digest, "piece", i, "offset", off, "err", err)
			return false, s.sendReject(stream, uint32(i), peerpb.Reject_REASON_NOT_HELD)
		}
		if s.limiter != nil {
			if err := s.limiter.WaitN(ctx, int(n)); err != nil {
				return false, fmt.Errorf("waiting for egress budget: %w", err)
			}
		}
		// Send copies the message into gRPC's buffers before returning, so
		// buf can be reused for the next chunk.
		if err := stream.Send(&peerpb.Message{Msg: &peerpb.Message_Chunk{Chunk: &peerpb.PieceChunk{
			Index: uint32(i), Offset: off, Data: buf[:n],
		}}}); err != nil {
			return false, err
		}
		s.m.egressBytes.Add(float64(n))
		snd.Sent(n, time.Now())
		off += n
	}
	s.m.servedBytes.WithLabelValues(source).Add(float64(size))
	s.m.piecesServed.WithLabelValues(source).Inc()
	return true, nil
}

// pieceSource reads pieces of one blob for one stream.
type pieceSource interface {
	// open returns the bytes [off, off+n) and where they come from
	// ("cache" or "storage").
	open(ctx context.Context, off, n int64) (io.ReadCloser, string, error)
	close()
}

// pieceSource pins the blob in the cache for the stream's life on an owner
// (reading it from storage once if needed), and reads storage directly
// otherwise, or when the blob does not fit in the cache.
func (s *Server) pieceSource(d digest.Digest, size int64) pieceSource {
	if s.owns(d) {
		e, err := s.cache.open(d, size, s.storageOpener(d))
		if err == nil {
			return &cachedSource{c: s.cache, e: e}
		}
		if !errors.Is(err, errNoRoom) {
			s.log.Warn("seeder: caching blob failed; serving it from storage", "digest", d, "err", err)
		}
	}
	return &storageSource{s: s, d: d}
}

type cachedSource struct {
	c *cache
	e *entry
}

func (c *cachedSource) open(ctx context.Context, off, n int64) (io.ReadCloser, string, error) {
	return io.NopCloser(c.e.reader(ctx, off, n)), "cache", nil
}

func (c *cachedSource) close() { c.c.release(c.e) }

type storageSource struct {
	s *Server
	d digest.Digest
}

func (ss *storageSource) open(ctx context.Context, off, n int64) (io.ReadCloser, string, error) {
	rc, err := ss.s.openStorage(ctx, ss.d, off)
	if err != nil {
		return nil, "", err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, n), rc}, "storage", nil
}

func (ss *storageSource) close() {}

// queueItem is a request to serve, or a rejection to send.
type queueItem struct {
	index  uint32
	reject peerpb.Reject_Reason
}

// requestQueue holds one stream's pending requests, filled by the receiving
// goroutine and drained by the sending one (a gRPC stream allows one
// sender), with cancellation of queued and in-progress pieces.
type requestQueue struct {
	max int

	mu       sync.Mutex
	items    []queueItem
	requests int             // requests (not rejections) in items
	active   map[uint32]bool // queued or being sent
	cancels  map[uint32]bool // cancelled while being sent
	closed   bool
	wake     chan struct{}
}

func newRequestQueue(max int) *requestQueue {
	return &requestQueue{max: max, active: map[uint32]bool{}, cancels: map[uint32]bool{}, wake: make(chan struct{}, 1)}
}

func (q *requestQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// push queues a request; false when the queue is full. A request for a
// piece already queued or being sent is accepted and dropped.
func (q *requestQueue) push(i uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.active[i] {
		delete(q.cancels, i)
		return true
	}
	if q.requests >= q.max {
		return false
	}
	q.items = append(q.items, queueItem{index: i})
	q.requests++
	q.active[i] = true
	q.signal()
	return true
}

// reject queues a rejection; false when even the rejections overflow (a
// peer that keeps requesting without reading answers).
func (q *requestQueue) reject(i uint32, reason peerpb.Reject_Reason) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items)-q.requests >= 4*q.max {
		return false
	}
	q.items = append(q.items, queueItem{index: i, reject: reason})
	q.signal()
	return true
}

// cancel withdraws a queued request, or stops the piece being sent.
func (q *requestQueue) cancel(i uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.active[i] {
		return
	}
	for k, it := range q.items {
		if it.index == i && it.reject == peerpb.Reject_REASON_UNSPECIFIED {
			q.items = append(q.items[:k], q.items[k+1:]...)
			q.requests--
			delete(q.active, i)
			return
		}
	}
	q.cancels[i] = true
}

func (q *requestQueue) cancelled(i uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cancels[i]
}

// done marks a request as finished.
func (q *requestQueue) done(i uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.active, i)
	delete(q.cancels, i)
}

func (q *requestQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// next waits for the next item; false when the queue is closed and empty,
// or ctx is done.
func (q *requestQueue) next(ctx context.Context) (queueItem, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			it := q.items[0]
			q.items = q.items[1:]
			if it.reject == peerpb.Reject_REASON_UNSPECIFIED {
				q.requests--
			}
			q.mu.Unlock()
			return it, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return queueItem{}, false
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			return queueItem{}, false
		}
	}
}
