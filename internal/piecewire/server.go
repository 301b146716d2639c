package piecewire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"
)

// ServerConfig tunes a Server. DefaultServerConfig returns working values;
// zero fields take them.
type ServerConfig struct {
	// MaxQueued is how many requests of one connection may wait or be
	// sent at once; more are answered with a Reject (ReasonBusy): 16. A
	// client pipelines a few per connection, so this is only reached by
	// one that does not count its answers.
	MaxQueued int `yaml:"maxQueued"`
	// Timeout bounds every step that waits on the peer once it has
	// started: the preface after connecting, the rest of a frame after its
	// first byte, and each write (a piece is written in rounds of at most
	// 1 MiB; a round that the peer does not take within Timeout means it
	// stopped reading, and the connection ends): 20s, the agent's piece
	// timeout, so a peer slower than that is dropped no later than its
	// requests would time out.
	Timeout time.Duration `yaml:"timeout"`
	// IdleTimeout closes a connection that has nothing to send and has
	// sent no frame for this long: 2m. Agents keep a connection per blob
	// being exchanged; this frees those of peers that vanished quietly.
	IdleTimeout time.Duration `yaml:"idleTimeout"`
	// MaxConns bounds the connections served at once; one more is
	// answered with an Error frame (CodeUnavailable) and closed: 1024. A
	// connection holds two goroutines and a 4 KiB read buffer.
	MaxConns int `yaml:"maxConns"`
	// MaxConnsPerBlob bounds the connections served at once for one blob
	// (a connection is for the blob of its first request, once its
	// capability verified); one more is answered with an Error frame
	// (CodeUnavailable) and closed, so that one layer's swarm cannot take
	// every connection: 32, the agent's maxUploadsPerBlob, its bound on the
	// streams of one blob.
	MaxConnsPerBlob int `yaml:"maxConnsPerBlob"`
	// UnsentLimit, if positive, caps the bytes a connection's socket
	// holds that TCP has not sent yet (TCP_NOTSENT_LOWAT), so that a write
	// round returns once its bytes are on the wire, not once they fit in
	// a send buffer of megabytes: what counts as sent (Piece.Sent) is then
	// what the link carried. A sender that admits requests by its backlog
	// and measured rate (the origin's seeder) needs it on a slow link,
	// where a whole piece is "written" at once and the backlog looks empty.
	// It costs CPU on fast links (more, smaller writes): 0 leaves the
	// kernel's buffering.
	UnsentLimit int `yaml:"-"`
	// Egress, if set, meters every piece byte this server sends (a token
	// bucket shared with whatever else the caller meters with it). Its
	// burst bounds a write round. nil: no limit.
	Egress *rate.Limiter `yaml:"-"`
	// Logger receives the reasons connections end (debug) and pieces that
	// could not be read (warn). nil: slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// DefaultServerConfig returns the defaults documented on ServerConfig.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{MaxQueued: 16, MaxConns: 1024, MaxConnsPerBlob: 32, Timeout: 20 * time.Second, IdleTimeout: 2 * time.Minute}
}

func (c ServerConfig) withDefaults() ServerConfig {
	d := DefaultServerConfig()
	if c.MaxQueued <= 0 {
		c.MaxQueued = d.MaxQueued
	}
	if c.Timeout <= 0 {
		c.Timeout = d.Timeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxConnsPerBlob <= 0 {
		c.MaxConnsPerBlob = d.MaxConnsPerBlob
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// writeStep is the most one write round sends: the write deadline is
// renewed per round, so a peer reading slowly but steadily is not cut off
// in the middle of a large piece.
const writeStep = 1 << 20

// copyBuffer is the buffer of the copy path (TLS, or a piece without a
// file): large writes, so that the TLS layer fills whole records.
const copyBuffer = 256 << 10

// Verifier checks a request's capability for a blob: *auth.Verifier.
type Verifier interface {
	VerifyCapability(token string, d digest.Digest) error
}

// Source opens the pieces a Server sends.
type Source interface {
	// OpenPiece returns piece i of blob d, to be sent now. To decline
	// the request it returns an error wrapping ErrNotHeld, or a
	// *RejectError. It is called only for requests whose capability
	// verified. Other errors are logged and answered as not held. It
	// may wait (for an upload slot, say): ctx is done when the client
	// cancels the request meanwhile (answered as a cancelled request
	// not started) or the connection ends.
	OpenPiece(ctx context.Context, d digest.Digest, i int) (*Piece, error)
}

// Piece is one piece to send.
type Piece struct {
	// Size is the piece's length in bytes: the Piece frame announces it.
	Size int64
	// File and Offset: the piece is Size bytes of File from Offset, sent
	// with sendfile(2) on a plaintext connection (read with ReadAt
	// otherwise). The server neither moves File's offset nor closes it.
	File   *os.File
	Offset int64
	// Reader is the piece's bytes when File is nil.
	Reader io.Reader
	// Sent, if set, is called with the bytes of each write round (at most
	// 1 MiB) once written, before Done: a sender on a slow link measures
	// its rate as the piece goes, not only once it ended.
	Sent func(n int64)
	// Done, if set, is called once after the piece was sent or its send
	// failed, with the bytes written (release a slot, close a file, count
	// egress).
	Done func(sent int64, err error)
}

// ErrNotHeld is what a Source returns (wrapped) for a piece it does not
// hold; the request is answered with ReasonNotHeld.
var ErrNotHeld = errors.New("piece not held")

// RejectError is what a Source returns to decline a request for another
// reason than not holding the piece.
type RejectError struct {
	Reason     Reason
	RetryAfter time.Duration
}

func (e *RejectError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("request declined: %s, retry after %s", e.Reason, e.RetryAfter)
	}
	return "request declined: " + e.Reason.String()
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("piecewire: server closed")

// ErrIdle ends a server connection that stayed idle for IdleTimeout.
var ErrIdle = errors.New("piecewire: connection idle")

// Stats counts what a Server sent.
type Stats struct {
	// Pieces is how many pieces were sent whole.
	Pieces int64
	// SendfileBytes and CopiedBytes are the piece bytes written with
	// sendfile(2) and with ordinary writes.
	SendfileBytes int64
	CopiedBytes   int64
}

// Server sends pieces to the clients that connect to it.
type Server struct {
	cfg  ServerConfig
	src  Source
	keys Verifier
	log  *slog.Logger
	bufs sync.Pool // *[]byte of copyBuffer

	pieces, sendfileBytes, copiedBytes atomic.Int64

	// handled, if set (tests), is called with every client frame once
	// it has been acted on.
	handled func(Frame)
	// written, if set (tests), is called after an answer is written and
	// before the connection counts it answered.
	written func(index uint32)
	// idled, if set (tests), is called when a connection has been idle for
	// IdleTimeout, before it is closed.
	idled func()

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	lns    map[net.Listener]struct{}
	blobs  map[digest.Digest]int // connections admitted per blob
	closed bool
}

// NewServer returns a server sending pieces from src to clients whose
// capabilities keys verifies.
func NewServer(cfg ServerConfig, src Source, keys Verifier) *Server {
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, src: src, keys: keys, log: cfg.Logger,
		conns: map[net.Conn]struct{}{}, lns: map[net.Listener]struct{}{}, blobs: map[digest.Digest]int{}}
	s.bufs.New = func() any { b := make([]byte, copyBuffer); return &b }
	return s
}

// Stats returns what the server sent so far.
func (s *Server) Stats() Stats {
	return Stats{Pieces: s.pieces.Load(), SendfileBytes: s.sendfileBytes.Load(), CopiedBytes: s.copiedBytes.Load()}
}

// Serve accepts connections on l and serves each in its own goroutine
// until l fails or the server is closed (ErrServerClosed). A TLS listener
// (tls.NewListener) makes every connection TLS: pieces are then written
// through it instead of with sendfile.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.lns[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, l)
		s.mu.Unlock()
	}()
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			return fmt.Errorf("piecewire: accepting connections: %w", err)
		}
		go func() {
			if err := s.ServeConn(nc); err != nil {
				s.log.Debug("piecewire: connection ended", "peer", nc.RemoteAddr(), "err", err)
			}
		}()
	}
}

// Close stops the listeners of Serve and ends every connection.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for l := range s.lns {
		_ = l.Close()
	}
	for nc := range s.conns {
		_ = nc.Close()
	}
	s.mu.Unlock()
	return nil
}

// ServeConn serves one connection until it ends and returns why: nil when
// the client closed it after its requests were answered, otherwise the
// error that ended it (a protocol violation wraps ErrProtocol; a peer that
// stopped reading, os.ErrDeadlineExceeded). It closes nc.
func (s *Server) ServeConn(nc net.Conn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = nc.Close()
		return ErrServerClosed
	}
	if len(s.conns) >= s.cfg.MaxConns {
		s.mu.Unlock()
		err := fmt.Errorf("piecewire: at the limit of %d connections", s.cfg.MaxConns)
		writeFatal(nc, Frame{Type: FrameError, Code: CodeUnavailable, Message: err.Error() + "; try another peer"}, s.cfg.Timeout)
		_ = nc.Close()
		return err
	}
	s.conns[nc] = struct{}{}
	s.mu.Unlock()
	if s.cfg.UnsentLimit > 0 {
		limitUnsent(nc, s.cfg.UnsentLimit)
	}
	defer func() {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		_ = nc.Close()
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &serverConn{s: s, nc: nc, br: bufio.NewReaderSize(nc, 4096), ctx: ctx,
		active: map[uint32]bool{}, wake: make(chan struct{}, 1)}
	defer c.leave()
	werr := make(chan error, 1)
	go func() {
		err := c.writeLoop()
		if err != nil {
			// Unblocks the reader: nothing more will be answered.
			_ = nc.Close()
		}
		werr <- err
	}()
	rerr := c.readLoop()
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		// Nothing more is answered: a piece being opened (a cache fill
		// waited on) gives up.
		cancel()
	}
	c.endReading(rerr)
	err := <-werr
	switch {
	case err != nil:
		return err
	case rerr != nil && !errors.Is(rerr, io.EOF):
		return rerr
	}
	return nil
}

// item is a queued answer: a request to serve or a rejection to send.
type item struct {
	index     uint32
	reject    Reason // zero: serve the piece
	retryMs   uint32
	cancelled bool
	// request: counted in serverConn.requests until answered.
	request bool
}

// serverConn is one connection: readLoop (the caller of ServeConn's
// goroutine) parses frames and queues answers, writeLoop (its own
// goroutine) is the only writer of the connection.
type serverConn struct {
	s   *Server
	nc  net.Conn
	br  *bufio.Reader
	ctx context.Context
	// d is the connection's blob (set by its first request) and token the
	// capability that verified for it; read by the writer only after the
	// request that set them was queued (under mu).
	d        digest.Digest
	token    string
	verified bool
	// admitted: counted among d's connections (Server.blobs); read and
	// written by the reader, then by leave once it is done.
	admitted bool

	mu       sync.Mutex
	queue    []item
	requests int             // requests (not rejections) queued or being sent
	active   map[uint32]bool // requested and not yet answered
	sending  bool
	// opening is the request whose piece is being opened (OpenPiece) while
	// openCancel is set; a Cancel for it meanwhile sets openCancelled and
	// calls openCancel: nothing of it has gone out.
	opening       uint32
	openCancel    context.CancelFunc
	openCancelled bool
	fatal         *Frame // an Error frame to send, then end
	fatalErr      error
	readDone      bool
	wake          chan struct{}
}

func (c *serverConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *serverConn) busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sending || len(c.queue) > 0
}

// readLoop reads frames until the client closes its side (io.EOF) or
// breaks the protocol.
func (c *serverConn) readLoop() error {
	cfg := c.s.cfg
	_ = c.nc.SetReadDeadline(time.Now().Add(cfg.Timeout))
	var pre [len(Preface)]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil {
		return fmt.Errorf("%w: reading the preface: %w", ErrProtocol, err)
	}
	if !bytes.Equal(pre[:], Preface[:]) {
		return c.refuse(CodeInvalid, fmt.Errorf("%w: preface %q, want %q (protocol version %d)", ErrProtocol, pre[:], Preface[:], Version))
	}
	for {
		// Waiting for the next frame consumes nothing, so an idle
		// deadline that passes while pieces are still being sent is
		// simply renewed.
		_ = c.nc.SetReadDeadline(time.Now().Add(cfg.IdleTimeout))
		if _, err := c.br.Peek(1); err != nil {
			if isTimeout(err) {
				if c.busy() {
					continue
				}
				if c.s.idled != nil {
					c.s.idled()
				}
				return fmt.Errorf("%w for %s", ErrIdle, cfg.IdleTimeout)
			}
			return err
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(cfg.Timeout))
		f, err := ReadFrame(c.br)
		if err != nil {
			if isTimeout(err) {
				return fmt.Errorf("%w: a frame started and did not finish within %s: %w", ErrProtocol, cfg.Timeout, err)
			}
			return err
		}
		if err := c.handle(f); err != nil {
			return err
		}
		if c.s.handled != nil {
			c.s.handled(f)
		}
	}
}

func (c *serverConn) handle(f Frame) error {
	switch f.Type {
	case FrameRequest:
		if c.d == "" {
			d, err := digest.Parse(f.Digest)
			if err != nil {
				return c.refuse(CodeInvalid, fmt.Errorf("%w: request digest %q: %w", ErrProtocol, f.Digest, err))
			}
			c.d = d
		} else if f.Digest != c.d.String() {
			return c.refuse(CodeInvalid, fmt.Errorf("%w: request for %s on a connection for %s (one blob per connection)", ErrProtocol, f.Digest, c.d))
		}
		// Checked before anything about the blob is looked at; a
		// capability that verified once on this connection is not
		// checked again (like a stream's, checked when it opens).
		if !c.verified || f.Capability != c.token {
			if err := c.s.keys.VerifyCapability(f.Capability, c.d); err != nil {
				return c.refuse(CodeDenied, fmt.Errorf("piece server: %w", err))
			}
			c.token, c.verified = f.Capability, true
		}
		if !c.admitted {
			if err := c.admit(); err != nil {
				return c.refuse(CodeUnavailable, err)
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.active[f.Index] {
			return c.refuseLocked(CodeInvalid, fmt.Errorf("%w: piece %d requested again before its answer", ErrProtocol, f.Index))
		}
		if c.requests >= c.s.cfg.MaxQueued {
			if len(c.queue) >= 4*c.s.cfg.MaxQueued {
				return c.refuseLocked(CodeInvalid, fmt.Errorf("%w: %d answers waiting: the client requests without reading", ErrProtocol, len(c.queue)))
			}
			c.queue = append(c.queue, item{index: f.Index, reject: ReasonBusy})
		} else {
			c.queue = append(c.queue, item{index: f.Index, request: true})
			c.requests++
		}
		c.active[f.Index] = true
		c.signal()
	case FrameCancel:
		c.mu.Lock()
		defer c.mu.Unlock()
		// A piece already being sent goes out whole (its length is
		// announced); one being opened (waiting for an upload slot, say)
		// is not sent; a late cancel, after the answer, is normal.
		if c.openCancel != nil && c.opening == f.Index {
			c.openCancelled = true
			c.openCancel()
			break
		}
		for k := range c.queue {
			if it := &c.queue[k]; it.index == f.Index && it.reject == 0 {
				it.cancelled = true
				break
			}
		}
	default:
		return c.refuse(CodeInvalid, fmt.Errorf("%w: a %s frame from a client", ErrProtocol, f.Type))
	}
	return nil
}

// admit counts the connection among its blob's, unless the blob has
// MaxConnsPerBlob already.
func (c *serverConn) admit() error {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.blobs[c.d]; n >= s.cfg.MaxConnsPerBlob {
		return fmt.Errorf("piecewire: at the limit of %d connections for %s; try another peer", n, c.d)
	}
	s.blobs[c.d]++
	c.admitted = true
	return nil
}

// leave uncounts an admitted connection from its blob's.
func (c *serverConn) leave() {
	if !c.admitted {
		return
	}
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.blobs[c.d]--; s.blobs[c.d] <= 0 {
		delete(s.blobs, c.d)
	}
}

// refuse makes the writer send an Error frame and end the connection.
func (c *serverConn) refuse(code Code, err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refuseLocked(code, err)
}

func (c *serverConn) refuseLocked(code Code, err error) error {
	if c.fatal == nil {
		c.fatal = &Frame{Type: FrameError, Code: code, Message: err.Error()}
		c.fatalErr = err
		c.signal()
	}
	return err
}

// endReading tells the writer no more requests come: after a clean close
// of the client's side it answers what is queued, after an error it stops.
func (c *serverConn) endReading(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDone = true
	if err != nil && !errors.Is(err, io.EOF) && c.fatal == nil {
		c.fatalErr = err
	}
	c.signal()
}

// next returns the next answer to write; ok false when there is none to
// come, with the error to end on.
func (c *serverConn) next() (it item, ok bool, fatal *Frame, err error) {
	for {
		c.mu.Lock()
		switch {
		case c.fatal != nil:
			f, e := c.fatal, c.fatalErr
			c.mu.Unlock()
			return item{}, false, f, e
		case c.fatalErr != nil:
			e := c.fatalErr
			c.mu.Unlock()
			return item{}, false, nil, e
		case len(c.queue) > 0:
			it = c.queue[0]
			c.queue = c.queue[1:]
			if it.reject == 0 {
				if it.cancelled {
					it.reject = ReasonCancelled
				} else {
					c.sending = true
				}
			}
			c.mu.Unlock()
			return it, true, nil, nil
		case c.readDone:
			c.mu.Unlock()
			return item{}, false, nil, nil
		}
		c.mu.Unlock()
		<-c.wake
	}
}

// unmark lets piece i be requested again.
func (c *serverConn) unmark(i uint32) {
	c.mu.Lock()
	delete(c.active, i)
	c.mu.Unlock()
}

// answered ends the work of an answered request.
func (c *serverConn) answered(it item) {
	c.mu.Lock()
	if it.request {
		c.requests--
	}
	c.sending = false
	c.mu.Unlock()
}

func (c *serverConn) writeLoop() error {
	for {
		it, ok, fatal, err := c.next()
		if !ok {
			if fatal != nil {
				c.sendFatal(*fatal)
			}
			return err
		}
		// The piece may be asked for again as soon as the client has the
		// answer, which can be before the write returns: the agent asks
		// again at once after a cancelled reject. So it stops being
		// active before the answer goes out.
		c.unmark(it.index)
		if it.reject != 0 {
			err = c.writeFrame(Frame{Type: FrameReject, Index: it.index, Reason: it.reject, RetryAfterMs: it.retryMs})
		} else {
			err = c.sendPiece(it.index)
		}
		if c.s.written != nil {
			c.s.written(it.index)
		}
		c.answered(it)
		if err != nil {
			return err
		}
	}
}

// lingerTimeout bounds how long a refused client's unread requests are
// drained after the Error frame.
const lingerTimeout = time.Second

// sendFatal writes an Error frame and half-closes the connection. Requests
// the client sent after the refused one are drained first: closing a
// socket with unread input resets it, and the reset could reach the client
// before the Error frame does, hiding why it was refused.
func (c *serverConn) sendFatal(f Frame) { writeFatal(c.nc, f, c.s.cfg.Timeout) }

func writeFatal(nc net.Conn, f Frame, timeout time.Duration) {
	b, err := AppendFrame(nil, f)
	if err != nil {
		return
	}
	_ = nc.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := nc.Write(b); err != nil {
		return
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
}

func (c *serverConn) writeFrame(f Frame) error {
	b, err := AppendFrame(nil, f)
	if err != nil {
		return err
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.Timeout))
	if _, err := c.nc.Write(b); err != nil {
		return c.writeErr(fmt.Sprintf("writing a %s frame", f.Type), err)
	}
	return nil
}

func (c *serverConn) writeErr(what string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("piecewire: %s: the peer stopped reading (no progress for %s): %w", what, c.s.cfg.Timeout, err)
	}
	return fmt.Errorf("piecewire: %s: %w", what, err)
}

// sendPiece answers a request: the piece, or a Reject when the source
// declines it. Only failures of the connection (and a piece that cannot
// be read once its length was announced) end the connection.
func (c *serverConn) sendPiece(i uint32) error {
	p, cancelled, err := c.open(i)
	if err != nil && c.ctx.Err() != nil {
		return nil // the connection is ending; see next
	}
	if cancelled {
		// Cancelled while it was being opened: answered as a cancelled
		// request that had not started, which the client expects.
		if err == nil && p.Done != nil {
			p.Done(0, context.Canceled)
		}
		return c.writeFrame(Frame{Type: FrameReject, Index: i, Reason: ReasonCancelled})
	}
	if err != nil {
		rej := Frame{Type: FrameReject, Index: i, Reason: ReasonNotHeld}
		var re *RejectError
		switch {
		case errors.As(err, &re):
			rej.Reason = re.Reason
			rej.RetryAfterMs = uint32(min(re.RetryAfter.Milliseconds(), 1<<32-1))
		case !errors.Is(err, ErrNotHeld):
			c.s.log.Warn("piecewire: opening a piece to send", "digest", c.d, "piece", i, "err", err)
		}
		return c.writeFrame(rej)
	}
	sent, err := c.writePiece(i, p)
	if p.Done != nil {
		p.Done(sent, err)
	}
	if err == nil {
		c.s.pieces.Add(1)
	}
	return err
}

// open opens piece i with a context the client's Cancel of it ends, and
// reports whether it did.
func (c *serverConn) open(i uint32) (p *Piece, cancelled bool, err error) {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	c.mu.Lock()
	c.opening, c.openCancel, c.openCancelled = i, cancel, false
	c.mu.Unlock()
	p, err = c.s.src.OpenPiece(ctx, c.d, int(i))
	c.mu.Lock()
	cancelled = c.openCancelled
	c.openCancel, c.openCancelled = nil, false
	c.mu.Unlock()
	return p, cancelled, err
}

func (c *serverConn) writePiece(i uint32, p *Piece) (int64, error) {
	if p.Size < 0 || p.Size > 1<<32-1 {
		return 0, fmt.Errorf("piecewire: piece %d of %s: size %d out of range", i, c.d, p.Size)
	}
	if err := c.writeFrame(Frame{Type: FramePiece, Index: i, Length: uint32(p.Size)}); err != nil {
		return 0, err
	}
	step := int64(writeStep)
	if l := c.s.cfg.Egress; l != nil && l.Burst() > 0 {
		step = min(step, int64(l.Burst()))
	}
	before := func(n int64) error {
		if l := c.s.cfg.Egress; l != nil {
			if err := l.WaitN(c.ctx, int(n)); err != nil {
				return fmt.Errorf("piecewire: waiting for egress budget: %w", err)
			}
		}
		return c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.Timeout))
	}
	after := func(n int64) {
		if p.Sent != nil {
			p.Sent(n)
		}
	}
	what := fmt.Sprintf("writing piece %d of %s", i, c.d)
	if sc, ok := c.nc.(syscall.Conn); ok && haveSendfile && p.File != nil {
		n, err := sendfile(sc, p.File, p.Offset, p.Size, step, before, after)
		c.s.sendfileBytes.Add(n)
		if err != nil {
			return n, c.writeErr(what, err)
		}
		return n, nil
	}
	r := p.Reader
	if p.File != nil {
		r = io.NewSectionReader(p.File, p.Offset, p.Size)
	}
	bp := c.s.bufs.Get().(*[]byte)
	defer c.s.bufs.Put(bp)
	buf := *bp
	var sent int64
	for sent < p.Size {
		n := min(int64(len(buf)), step, p.Size-sent)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return sent, fmt.Errorf("piecewire: reading piece %d of %s at %d: %w", i, c.d, sent, err)
		}
		if err := before(n); err != nil {
			return sent, err
		}
		m, err := c.nc.Write(buf[:n])
		sent += int64(m)
		c.s.copiedBytes.Add(int64(m))
		if m > 0 {
			after(int64(m))
		}
		if err != nil {
			return sent, c.writeErr(what, err)
		}
	}
	return sent, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
