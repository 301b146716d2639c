package swarm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/internal/uplink"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// pieceListenEnv sets Config.PieceListen when the configuration leaves it
// empty: the swarm tests and benchmarks turn the piece data path off
// ("off") or pin it through it.
const pieceListenEnv = "SHOAL_SWARM_PIECE_LISTEN"

// PieceListenOff, as Config.PieceListen, keeps pieces on the Exchange
// streams.
const PieceListenOff = "off"

// startPieceServer serves the pieces held on the piece data path at addr.
func (s *Swarm) startPieceServer(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("swarm: piece data path listener: %w", err)
	}
	if s.pieceTLS.server != nil {
		l = tls.NewListener(l, s.pieceTLS.server)
	}
	_, port, err := net.SplitHostPort(l.Addr().String())
	if err != nil {
		_ = l.Close()
		return fmt.Errorf("swarm: piece data path listener: %w", err)
	}
	s.piecePort = port
	s.pieceServer = piecewire.NewServer(piecewire.ServerConfig{
		MaxQueued: s.cfg.MaxQueuedUploads,
		// A peer's piece connection goes with its stream, whichever end
		// opened it: the agents that opened streams to this one dial it,
		// and so do those this one opened streams to (connectPieces).
		// One more than the streams can have is refused, and a refused
		// piece connection ends its stream.
		MaxConnsPerBlob: s.cfg.MaxUploadsPerBlob + s.cfg.MaxPeersPerBlob,
		Timeout:         s.cfg.PieceTimeout,
		Egress:          s.egress,
		Logger:          s.log,
	}, storeSource{s}, s.keys)
	go func() {
		if err := s.pieceServer.Serve(l); err != nil && !errors.Is(err, piecewire.ErrServerClosed) {
			s.log.Error("piece data path stopped", "err", err)
		}
	}()
	s.log.Info("serving pieces on the piece data path", "addr", l.Addr().String(), "tls", s.pieceTLS.server != nil)
	return nil
}

// pieceHeaders adds this agent's piece port to an Exchange's response
// header, when it serves one.
func (s *Swarm) pieceHeaders(md metadata.MD) metadata.MD {
	if s.piecePort != "" {
		md.Set(peerwire.PieceHeader, s.piecePort)
	}
	return md
}

// pieceAddr is the address of the piece server that a stream's peer named
// in md (peerwire.PieceHeader, a port) at host, the host its stream came
// from or went to; "" when it named none or this agent keeps pieces on the
// streams.
func (s *Swarm) pieceAddr(host string, md metadata.MD) string {
	v := md.Get(peerwire.PieceHeader)
	if s.pieceServer == nil || len(v) == 0 || host == "" {
		return ""
	}
	return net.JoinHostPort(host, v[0])
}

// dialPieces opens a piece connection to addr, the piece server of the
// peer peerID, for the blob meta describes, calling progress as piece
// bytes arrive on it. It returns nil when the dial fails: the stream then
// carries the pieces.
func (s *Swarm) dialPieces(ctx context.Context, meta *metainfo.Metainfo, addr, peerID string, progress func()) *piecewire.Conn {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	tok := s.capability(meta.Digest)
	pc, err := s.dialPiece(ctx, addr, s.pieceTLS.dialing(host, peerID), meta, tok, s.pieceClientConfig(meta, progress))
	s.metrics.pieceDials.WithLabelValues(boolLabel(err == nil, "ok", "failed")).Inc()
	if err != nil {
		s.log.Debug("piece data path: dialing failed, pieces stay on the stream", "addr", addr, "err", err)
		return nil
	}
	s.log.Debug("piece data path: pieces from this peer come over it", "addr", addr, "digest", meta.Digest)
	return pc
}

// pieceClientConfig is the configuration of a piece connection fetching
// the blob meta describes, calling progress as piece bytes arrive.
func (s *Swarm) pieceClientConfig(meta *metainfo.Metainfo, progress func()) piecewire.ClientConfig {
	return piecewire.ClientConfig{
		// Cancelled requests stay outstanding until answered, and the
		// scheduler may ask for more meanwhile.
		MaxOutstanding: 4 * s.cfg.MaxInFlightPerPeer,
		// Twice the scheduler's piece timeout: a peer that stops sending
		// is the scheduler's to find (its requests time out one by one
		// and it is dropped as unresponsive); this only ends a connection
		// whose peer went silent past that, which would otherwise end the
		// stream first and let the peer back in at the next dial.
		Timeout: 2 * s.cfg.PieceTimeout,
		// Pieces are written into the blob's file as they arrive: a
		// connection holds 256 KiB rather than a whole piece
		// (docs/agent.md, "Memory"). A piece that another connection is
		// writing already comes into a buffer.
		Sink: func(i int) (piecewire.PieceSink, error) {
			return s.store.StartPiece(meta.Digest, i)
		},
		Buffer:  s.store.PieceBuffer,
		Ingress: s.ingress,
		// The scheduler's piece timeout counts from the peer's last
		// progress: a piece crossing a slow or crowded link takes longer
		// than the timeout while its bytes keep coming.
		Progress: func(int) { progress() },
	}
}

// pieceLoop turns the piece connection's answers into what the stream's
// PieceChunk and Reject messages would have been, until it ends. A piece
// connection that ends with requests outstanding, or because the peer broke
// the protocol, ends the conn too (the download asks elsewhere); one the
// peer closed between answers (idle, perhaps as a request went out:
// piecewire.ErrClosedByServer), or quietly with nothing outstanding, is
// gone: the requests outstanding on it go on the stream, and so do later
// ones.
func (c *conn) pieceLoop(pw *piecewire.Conn) {
	for r := range pw.Results() {
		if h := c.s.pieceAnswered; h != nil {
			h(c, r)
		}
		i := r.Index
		c.mu.Lock()
		wanted := c.requested[i] == viaPieces
		dl := c.dl
		switch {
		case r.Sink != nil:
			if !wanted || dl == nil {
				c.mu.Unlock()
				c.s.metrics.discarded.WithLabelValues(c.source()).Add(float64(c.meta.PieceSize(i)))
				r.Sink.Abort()
				continue
			}
			c.pieceEndedLocked(i)
			c.mu.Unlock()
			// Written as it arrived and hashed: the store checks the hash
			// against the metainfo and records the piece.
			err := r.Sink.Commit(r.Sum)
			dl.post(evPiece{c: c, piece: i, size: int(c.meta.PieceSize(i)), err: err}, c.closed)
		case r.Data != nil:
			if !wanted || dl == nil {
				c.mu.Unlock()
				c.s.metrics.discarded.WithLabelValues(c.source()).Add(float64(len(r.Data)))
				c.s.store.PutPieceBuffer(r.Data)
				continue
			}
			c.pieceEndedLocked(i)
			c.mu.Unlock()
			// Hashed as it arrived: the store checks that hash against
			// the metainfo instead of hashing the piece again. Written
			// here rather than on a goroutine of its own like a stream's
			// piece (conn.store): without the hash it is a copy into the
			// page cache, and the connection keeps receiving into its
			// results meanwhile.
			n := len(r.Data)
			err := c.s.store.WriteVerifiedPiece(c.bs.d, i, r.Data, r.Sum)
			dl.post(evPiece{c: c, piece: i, size: n, err: err}, c.closed)
		case r.Err != nil:
			c.pieceEndedLocked(i)
			c.mu.Unlock()
			if dl != nil && wanted {
				dl.post(evPiece{c: c, piece: i, err: r.Err}, c.closed)
			}
		default:
			c.mu.Unlock()
			c.rejected(i, viaPieces, rejectReason(r.Reject), r.RetryAfter)
		}
	}
	select {
	case <-c.closed:
		return // closed with the conn
	default:
	}
	err := pw.Err()
	c.mu.Lock()
	gone := errors.Is(err, piecewire.ErrClosedByServer) ||
		c.onPiecesLocked() == 0 && !errors.Is(err, piecewire.ErrProtocol)
	var moved int
	if gone {
		c.pw = nil
		// Asked again on the stream, which answers them as it answers a
		// peer without a piece port.
		for i, r := range c.requested {
			if r == viaPieces {
				c.requested[i] = viaStream
				c.queueLocked(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: uint32(i)}}})
				moved++
			}
		}
	}
	c.mu.Unlock()
	if gone {
		c.log.Debug("piece connection ended; pieces go on the stream", "err", err, "requests moved", moved)
		return
	}
	c.close(fmt.Errorf("piece connection: %w", err))
}

func rejectReason(r piecewire.Reason) peerpb.Reject_Reason {
	switch r {
	case piecewire.ReasonNotHeld:
		return peerpb.Reject_REASON_NOT_HELD
	case piecewire.ReasonAtPeers:
		return peerpb.Reject_REASON_AT_PEERS
	}
	return peerpb.Reject_REASON_BUSY
}

// storeSource serves the piece store's verified pieces on the piece data
// path, cfg.UploadSlots at a time, with the stream's admission rule: a
// piece this host's uplink would not send within half the piece timeout,
// behind what it sends and what waits for a slot, is refused as busy.
type storeSource struct{ s *Swarm }

func (src storeSource) OpenPiece(ctx context.Context, d digest.Digest, i int) (*piecewire.Piece, error) {
	s := src.s
	// The piece's place in the blob's file rather than a reader of its
	// bytes: on a plaintext connection piecewire sends it with sendfile(2),
	// from the page cache, without copying it through this process.
	sec, err := s.store.PieceSection(d, i)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", piecewire.ErrNotHeld, err)
	}
	size := sec.Size
	if err := s.takeUploadSlot(ctx, d, i, size); err != nil {
		sec.Release()
		return nil, err
	}
	// Measured per write round, each piece a sender of its own (as the
	// origin seeder does): pieces sent side by side and reported whole at
	// their end would measure a fraction of the link.
	now := s.upClock()
	snd := s.up.Start(size, now())
	var told int64
	return &piecewire.Piece{Size: size, File: sec.File, Offset: sec.Offset,
		Sent: func(n int64) {
			told += n
			snd.Sent(n, now())
		},
		Done: func(sent int64, _ error) {
			s.upSlots.Release()
			sec.Release()
			t := now()
			snd.Sent(sent-told, t) // what Sent was not told of (nothing, normally)
			snd.End(t)
			s.metrics.uploaded.Add(float64(sent))
		}}, nil
}

// takeUploadSlot waits for one of the piece data path's upload slots for
// piece i of d (size bytes). A freed slot goes to the waiting request for
// the piece the fewest of this agent's peers hold (uplink.Slots). A
// request may wait if the uplink, at its measured rate, would send it
// within half the piece timeout behind what it sends and what waits (or,
// with the rate not measured yet, if at most a slot's worth of pieces
// waits); else it takes the place of a waiting request for a piece more
// peers hold, or is answered busy. It gives up when ctx ends (the request
// was cancelled). Free the slot with s.upSlots.Release().
func (s *Swarm) takeUploadSlot(ctx context.Context, d digest.Digest, i int, size int64) error {
	err := s.upSlots.Take(ctx, size, s.holders(d, i), func(queued int64, waiting int) bool {
		return s.up.Wait(queued) <= s.cfg.PieceTimeout/2 && (s.up.Rate() != 0 || waiting <= s.cfg.UploadSlots)
	})
	if errors.Is(err, uplink.ErrBusy) {
		s.metrics.uploadsRefused.Inc()
		return &piecewire.RejectError{Reason: piecewire.ReasonBusy}
	}
	return err
}

// holders is how many of this agent's peers for d, origins aside, hold
// piece i.
func (s *Swarm) holders(d digest.Digest, i int) int {
	s.mu.Lock()
	bs := s.blobs[d]
	var conns []*conn
	if bs != nil {
		conns = make([]*conn, 0, len(bs.conns))
		for c := range bs.conns {
			if !c.origin {
				conns = append(conns, c)
			}
		}
	}
	s.mu.Unlock()
	n := 0
	for _, c := range conns {
		c.mu.Lock()
		if c.remote.Has(i) {
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// upClock is the clock of the piece data path's uploads in s.up.
func (s *Swarm) upClock() func() time.Time {
	if s.upNow != nil {
		return s.upNow
	}
	return time.Now
}

// pieceListen is the piece data path's listen address, "" when it is off:
// the configured one, else the environment's, else peerListen's host with
// a free port (announced in the Exchange header like any other).
func pieceListen(cfg Config, peerListen string) string {
	addr := cfg.PieceListen
	if addr == "" {
		addr = os.Getenv(pieceListenEnv)
	}
	switch addr {
	case PieceListenOff:
		return ""
	case "":
		host, _, err := net.SplitHostPort(peerListen)
		if err != nil {
			host = ""
		}
		return net.JoinHostPort(host, "0")
	}
	return addr
}

func isHostPort(addr string) bool {
	_, _, err := net.SplitHostPort(addr)
	return err == nil
}

// pieceTLS is the piece data path's TLS: the peer protocol's certificates,
// at TLS 1.3 (a new protocol between agents of one version owes nothing to
// older clients, and 1.3 saves a round trip per connection).
type pieceTLS struct {
	server, client *tls.Config
	// identity: RequireIdentity, the other end's certificate is checked.
	identity bool
}

// pieceSessions is how many TLS sessions an agent keeps to resume piece
// connections with: one per peer it fetches from at once is plenty.
const pieceSessions = 256

// newPieceTLS derives the piece data path's TLS from the peer listener's
// (server) and the peer connections' (client), nil for plaintext. With
// requireIdentity a piece connection's certificates are held to what a
// stream's are (peerIdentity): a cluster identity, no tracker's, and on
// the dialing side the peer the stream was opened to.
func newPieceTLS(server, client *tls.Config, requireIdentity bool) pieceTLS {
	t := pieceTLS{identity: requireIdentity}
	if server != nil {
		t.server = server.Clone()
		t.server.MinVersion = tls.VersionTLS13
		if requireIdentity {
			t.server.VerifyConnection = func(cs tls.ConnectionState) error {
				_, err := pieceIdentity(cs)
				return err
			}
		}
	}
	if client != nil {
		t.client = client.Clone()
		t.client.MinVersion = tls.VersionTLS13
		t.client.ClientSessionCache = tls.NewLRUClientSessionCache(pieceSessions)
	}
	return t
}

// dialing returns the TLS configuration of a piece connection to host,
// whose stream's peer is peerID; nil for plaintext.
func (t pieceTLS) dialing(host, peerID string) *tls.Config {
	if t.client == nil {
		return nil
	}
	c := t.client.Clone()
	if c.ServerName == "" {
		// As gRPC does for the streams: the certificate names the host
		// dialed, unless the cluster shares one name.
		c.ServerName = host
	}
	if t.identity {
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			id, err := pieceIdentity(cs)
			if err == nil && id.ID != peerID {
				err = fmt.Errorf("the piece server's certificate is %s; its stream's peer is %q", id, peerID)
			}
			return err
		}
	}
	return c
}

// pieceIdentity is peerIdentity for a piece connection: the verified
// cluster identity of the other end, which must not be a tracker's.
func pieceIdentity(cs tls.ConnectionState) (auth.Identity, error) {
	id, err := auth.PeerFromTLS(&cs)
	switch {
	case err != nil:
		return auth.Identity{}, fmt.Errorf("piece connections need a cluster certificate with a shoal://<role>/<peer-id> identity (docs/certificates.md): %w", err)
	case id.Role == auth.RoleTracker:
		return auth.Identity{}, fmt.Errorf("%s is a tracker certificate: trackers exchange no pieces", id)
	}
	return id, nil
}
