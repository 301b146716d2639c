package seeder

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// PieceListenOff as Config.PieceListen keeps piece bytes on the Exchange
// streams.
const PieceListenOff = "off"

// pieceUnsentLimit caps the bytes a piece connection's socket holds unsent
// (piecewire.ServerConfig.UnsentLimit): without it a piece that fits in
// the send buffer counts as sent as soon as it is written, the node sees
// no backlog on a slow link, and takes on more sends than the link
// carries.
const pieceUnsentLimit = 128 << 10

// pieceService is the seeder's side of the piece data path: piece bytes on
// connections of internal/piecewire instead of the Exchange streams, with
// the same rules as a stream's requests (capability, upload slots and
// uplink, superseeding, egress limit, metrics).
//
// Each connection gets its own piecewire.Server: the piece source needs to
// know which agent a request comes from (superseeding gives a piece to one
// agent per window), and a piecewire.Source is told only the blob and the
// piece.
type pieceService struct {
	s    *Server
	ln   net.Listener
	port string
	tls  *tls.Config // nil: plaintext, pieces sent with sendfile
	// slots bounds the open connections (maxStreams, like the streams
	// they stand beside).
	slots chan struct{}
	// ctx ends TLS handshakes in progress when the service closes.
	ctx  context.Context
	stop context.CancelFunc

	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[*piecewire.Server]struct{}
	closed bool
}

// pieceAddr is the piece data path's listen address for cfg; empty when it
// is off.
func pieceAddr(cfg Config) string {
	switch cfg.PieceListen {
	case PieceListenOff:
		return ""
	case "":
		host, _, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			host = ""
		}
		return net.JoinHostPort(host, "0")
	}
	return cfg.PieceListen
}

func isHostPort(addr string) bool {
	_, _, err := net.SplitHostPort(addr)
	return err == nil
}

// startPieces listens on the piece data path unless it is off (nil).
func (s *Server) startPieces() (*pieceService, error) {
	addr := pieceAddr(s.cfg)
	if addr == "" {
		return nil, nil
	}
	tc, err := s.cfg.TLS.ServerConfig()
	if err != nil {
		return nil, fmt.Errorf("seeder: piece data path: %w", err)
	}
	if tc != nil {
		// Piece bytes are the bulk of the traffic: TLS 1.3's AES-GCM
		// suites only, as agents use.
		tc.MinVersion = tls.VersionTLS13
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("seeder: piece data path: %w", err)
	}
	_, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("seeder: piece data path: %w", err)
	}
	p := &pieceService{s: s, ln: ln, port: port, tls: tc,
		slots: make(chan struct{}, s.cfg.MaxStreams), conns: map[*piecewire.Server]struct{}{}}
	p.ctx, p.stop = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.serve()
	s.log.Info("seeder: serving pieces on the piece data path", "addr", ln.Addr().String(), "tls", tc != nil)
	return p, nil
}

// PieceAddr is the piece data path's listening address, empty when it is
// off.
func (s *Server) PieceAddr() string {
	if s.pieces == nil {
		return ""
	}
	return s.pieces.ln.Addr().String()
}

func (p *pieceService) serve() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if !closed {
				p.s.log.Error("seeder: piece data path stopped accepting", "err", err)
			}
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serveConn(nc)
		}()
	}
}

// close stops accepting, ends every connection and waits for them, so that
// the cache pins and upload slots they hold are released.
func (p *pieceService) close() {
	if p == nil {
		return
	}
	p.stop()
	p.mu.Lock()
	p.closed = true
	_ = p.ln.Close()
	for srv := range p.conns {
		_ = srv.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *pieceService) serveConn(nc net.Conn) {
	s := p.s
	select {
	case p.slots <- struct{}{}:
		defer func() { <-p.slots }()
	default:
		s.m.refused.WithLabelValues("piece_connections").Inc()
		refuseConn(nc, piecewire.CodeUnavailable, fmt.Sprintf("origin seeder: at its limit of %d piece connections (maxStreams); try another source", s.cfg.MaxStreams))
		return
	}
	s.m.pieceConns.Inc()
	defer s.m.pieceConns.Dec()

	src := &pieceConn{s: s, via: s.carriers.Add(1)}
	keys := pieceKeys{s: s}
	if p.tls != nil {
		tc := tls.Server(nc, p.tls)
		ctx, cancel := context.WithTimeout(p.ctx, s.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.m.refused.WithLabelValues("piece_handshake").Inc()
			s.log.Debug("seeder: piece data path: TLS handshake failed", "peer", nc.RemoteAddr(), "err", err)
			_ = nc.Close()
			return
		}
		nc = tc
		if s.requireIdentity {
			cs := tc.ConnectionState()
			id, err := auth.PeerFromTLS(&cs)
			switch {
			case err != nil:
				keys.refuse = fmt.Errorf("origin seeder: peers need a cluster certificate with a shoal://<role>/<peer-id> identity (docs/certificates.md): %w", err)
			case id.Role == auth.RoleTracker:
				keys.refuse = fmt.Errorf("origin seeder: %s is a tracker certificate: trackers exchange no pieces", id)
			}
			src.peer = id.ID
		}
	}
	if src.peer == "" {
		// Without mTLS the requests name no agent: the first one, which
		// names the blob, finds it by the streams from this host
		// (pieceConnPeer).
		src.host = hostOf(nc.RemoteAddr())
	}
	srv := piecewire.NewServer(piecewire.ServerConfig{
		MaxQueued: s.cfg.MaxQueuedRequests,
		// The node admits sends by its backlog and measured rate
		// (takeUploadSlot), which must count what the link carried.
		UnsentLimit: pieceUnsentLimit,
		Egress:      s.limiter,
		Logger:      s.log,
	}, src, keys)
	src.srv = srv
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = nc.Close()
		return
	}
	p.conns[srv] = struct{}{}
	p.mu.Unlock()

	err := srv.ServeConn(nc)
	src.end(err)

	p.mu.Lock()
	delete(p.conns, srv)
	p.mu.Unlock()
}

// refuseConn answers a connection with an Error frame and closes it. Its
// unread input is drained first (briefly): closing a socket with unread
// bytes resets it, and the reset could overtake the refusal.
func refuseConn(nc net.Conn, code piecewire.Code, msg string) {
	defer nc.Close()
	b, err := piecewire.AppendFrame(nil, piecewire.Frame{Type: piecewire.FrameError, Code: code, Message: msg})
	if err != nil {
		return
	}
	_ = nc.SetDeadline(time.Now().Add(time.Second))
	if _, err := nc.Write(b); err != nil {
		return
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
}

// pieceKeys checks a piece connection's capability as checkCapability
// checks a call's, refusing every request of a connection whose
// certificate may not have pieces (refuse).
type pieceKeys struct {
	s      *Server
	refuse error
}

func (k pieceKeys) VerifyCapability(token string, d digest.Digest) error {
	err := k.refuse
	if err == nil {
		err = k.s.verifier.VerifyCapability(token, d)
	}
	if err != nil {
		k.s.m.capabilityDenied.WithLabelValues("pieces").Inc()
		k.s.log.Debug("seeder: refused a piece connection", "digest", d, "err", err)
	}
	return err
}

// pieceConn is the piecewire.Source of one connection. OpenPiece and the
// Done of its pieces run on the connection's one writing goroutine, and end
// after it: no locking.
type pieceConn struct {
	s    *Server
	peer string // the agent, for the superseeding ledger
	via  uint64 // this connection, for the ledger (recipient.via)
	host string // without a certificate: the agent's IP, for pieceConnPeer
	srv  *piecewire.Server
	sent piecewire.Stats // srv's counts already added to the metrics

	// Set by the first request (every request of a connection is for its
	// one blob).
	m      *metainfo.Metainfo
	src    pieceSource
	grants *blobLedger
}

// OpenPiece answers a request as send does a stream's: superseeding first,
// then an upload slot, then the piece from the cache file (sent with
// sendfile on plaintext) or storage.
func (c *pieceConn) OpenPiece(ctx context.Context, d digest.Digest, i int) (*piecewire.Piece, error) {
	s := c.s
	if c.m == nil {
		m, err := s.metainfo(ctx, d, true)
		if err != nil {
			if errors.Is(err, errBlobUnknown) {
				s.m.rejects.WithLabelValues("not_held").Inc()
				return nil, fmt.Errorf("%w: %w", piecewire.ErrNotHeld, err)
			}
			return nil, err
		}
		c.m, c.src, c.grants = m, s.pieceSource(d, m.Size), s.ledger.open(d, m.NumPieces(), m.Size)
		if c.peer == "" {
			c.peer = s.pieceConnPeer(d, c.host)
		}
		if s.owns(d) {
			s.track(d)
		}
	}
	m := c.m
	if i >= m.NumPieces() {
		s.m.rejects.WithLabelValues("not_held").Inc()
		return nil, piecewire.ErrNotHeld
	}
	wait, again := s.ledger.take(c.grants, i, c.recipient(), time.Now())
	if wait > 0 {
		s.m.rejects.WithLabelValues("at_peers").Inc()
		return nil, &piecewire.RejectError{Reason: piecewire.ReasonAtPeers, RetryAfter: wait + time.Millisecond}
	}
	size := m.PieceSize(i)
	if !s.takeUploadSlot(size) {
		s.ledger.undo(c.grants, i, c.recipient())
		s.m.rejects.WithLabelValues("busy").Inc()
		return nil, &piecewire.RejectError{Reason: piecewire.ReasonBusy}
	}
	p, closer, source, err := c.open(ctx, m.PieceOffset(i), size)
	if err != nil {
		<-s.uploads
		s.ledger.done(c.grants, i, c.recipient(), time.Now(), false)
		if ctx.Err() == nil {
			s.log.Warn("seeder: reading piece failed", "digest", d, "piece", i, "err", err)
			s.m.rejects.WithLabelValues("not_held").Inc()
		}
		return nil, fmt.Errorf("%w: %w", piecewire.ErrNotHeld, err)
	}
	if again {
		s.m.piecesAgain.Inc()
		s.log.Debug("seeder: sending a piece again", "digest", d, "piece", i, "peer", c.peer)
	}
	s.m.uploads.Inc()
	// The link's rate is measured as the piece goes out (each write
	// round), not only at its end: pieces sent together on a slow link
	// end together, long after the node had to know what it can take.
	snd := s.up.Start(size, time.Now())
	var told int64
	p.Sent = func(n int64) {
		told += n
		snd.Sent(n, time.Now())
	}
	p.Done = func(sent int64, err error) {
		if closer != nil {
			_ = closer.Close()
		}
		now := time.Now()
		snd.Sent(sent-told, now) // what Sent was not told of (nothing, normally)
		snd.End(now)
		s.m.egressBytes.Add(float64(sent))
		complete := err == nil && sent == size
		s.ledger.done(c.grants, i, c.recipient(), now, complete)
		if complete {
			s.m.servedBytes.WithLabelValues(source).Add(float64(size))
			s.m.piecesServed.WithLabelValues(source).Inc()
		}
		c.count()
		s.m.uploads.Dec()
		<-s.uploads
	}
	return p, nil
}

// open returns the piece at [off, off+n): from the cache file once the
// fill has got past it (sendfile reads the file itself), else a reader of
// storage, to close when sent.
func (c *pieceConn) open(ctx context.Context, off, n int64) (*piecewire.Piece, io.Closer, string, error) {
	if cs, ok := c.src.(*cachedSource); ok {
		if err := cs.e.waitFor(ctx, off+n); err != nil {
			return nil, nil, "", err
		}
		return &piecewire.Piece{Size: n, File: cs.e.f, Offset: off}, nil, "cache", nil
	}
	rc, source, err := c.src.open(ctx, off, n)
	if err != nil {
		return nil, nil, "", err
	}
	return &piecewire.Piece{Size: n, Reader: rc}, rc, source, nil
}

// count adds what the connection's server wrote since the last call to the
// metrics, by method.
func (c *pieceConn) count() {
	st := c.srv.Stats()
	c.s.m.pieceBytes.WithLabelValues("sendfile").Add(float64(st.SendfileBytes - c.sent.SendfileBytes))
	c.s.m.pieceBytes.WithLabelValues("copy").Add(float64(st.CopiedBytes - c.sent.CopiedBytes))
	c.sent = st
}

// recipient is what the ledger knows this connection as: its agent's
// name, and the connection itself.
func (c *pieceConn) recipient() recipient { return recipient{peer: c.peer, via: c.via} }

// end releases what the connection held once it ended with err: a
// connection that broke (err set) frees the pieces given over it at once,
// as a broken stream does, and only those (not its agent's stream's); one
// the agent closed keeps their windows.
func (c *pieceConn) end(err error) {
	if c.m == nil {
		return
	}
	if err != nil {
		c.s.ledger.release(c.grants, c.recipient(), time.Now())
	}
	c.s.ledger.close(c.m.Digest, c.grants, time.Now())
	c.src.close()
}
