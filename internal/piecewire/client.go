package piecewire

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// ClientConfig tunes a Conn. DefaultClientConfig returns working values;
// zero fields take them.
type ClientConfig struct {
	// MaxOutstanding is how many requests may be pipelined on one
	// connection (sent and not yet answered): 8. Request fails beyond it.
	MaxOutstanding int `yaml:"maxOutstanding"`
	// Timeout bounds every wait on the server once something is expected
	// of it: with a request outstanding, a read that gets no byte for this
	// long fails the connection (a mute or stalled server); so does a write
	// that makes no progress (a server that stopped reading): 20s.
	Timeout time.Duration `yaml:"timeout"`
	// Buffer returns a buffer of capacity at least size for a piece
	// about to arrive; its first size bytes are overwritten. nil: make.
	// The agent passes its piece store's buffers (PieceBuffer), so
	// verified pieces move into the store without a copy.
	Buffer func(size int64) []byte `yaml:"-"`
	// Sink, if set, is asked for a place to write piece i to as its
	// bytes arrive, in steps of 256 KiB, instead of a buffer of the
	// piece's size: a connection then holds one step's buffer, however
	// large the pieces. The piece is delivered as Result.Sink, for the
	// receiver to Commit or Abort; a piece that arrives corrupt, or is
	// cancelled while it arrives, is aborted here. Sink's error (the
	// piece is held, or being written by another connection) means the
	// piece goes into a Buffer as without a Sink. The agent passes its
	// piece store's StartPiece, which writes into the blob's file.
	Sink func(i int) (PieceSink, error) `yaml:"-"`
	// Ingress, if set, meters every piece byte this connection receives
	// (a token bucket shared with whatever else the caller meters with
	// it): a piece is read in steps of at most 256 KiB, each waiting for
	// its bytes' tokens first, and TCP holds the sender back meanwhile.
	// Its burst must be at least 256 KiB. nil: no limit.
	Ingress *rate.Limiter `yaml:"-"`
	// Progress, if set, is called on the reading goroutine each time a
	// step (at most 256 KiB) of a piece has arrived, dropped cancelled
	// pieces' included, with the piece's index. A piece crossing a slow
	// or crowded link can take longer than the caller lets a peer go
	// without delivering; its bytes coming show that the peer is sending.
	// It must not block.
	Progress func(i int) `yaml:"-"`
}

// PieceSink receives one piece's bytes in order (ClientConfig.Sink).
type PieceSink interface {
	// Write takes the piece's next bytes; an error ends the connection.
	io.Writer
	// Commit ends the piece, written whole and hashed to sum as it
	// arrived: it becomes the receiver's.
	Commit(sum [sha256.Size]byte) error
	// Abort ends the piece without it.
	Abort()
}

// DefaultClientConfig returns the defaults documented on ClientConfig.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{MaxOutstanding: 8, Timeout: 20 * time.Second}
}

func (c ClientConfig) withDefaults() ClientConfig {
	d := DefaultClientConfig()
	if c.MaxOutstanding <= 0 {
		c.MaxOutstanding = d.MaxOutstanding
	}
	if c.Timeout <= 0 {
		c.Timeout = d.Timeout
	}
	if c.Buffer == nil {
		c.Buffer = func(size int64) []byte { return make([]byte, size) }
	}
	return c
}

// readStep is how much of a piece is read before it is hashed: the bytes
// are hashed while still in the CPU's cache, and the read deadline is
// renewed per step.
const readStep = 256 << 10

var (
	// ErrTimeout is wrapped when the server made no progress for Timeout.
	ErrTimeout = errors.New("piecewire: no progress from the peer")
	// ErrDenied is wrapped when the server refused the capability.
	ErrDenied = errors.New("piecewire: capability refused")
	// ErrClosed is a Conn's error after Close.
	ErrClosed = errors.New("piecewire: connection closed")
	// ErrClosedByServer is wrapped when the server closed the connection
	// between answers (an end of the connection, or a reset, where the
	// next frame would start): nothing of an answer was cut, and the
	// requests outstanding had not started. A server closes a connection
	// so when it has been idle (ServerConfig.IdleTimeout), and a request
	// sent as it does meets that end: ask for those pieces elsewhere.
	ErrClosedByServer = errors.New("piecewire: the server closed the connection")
	// ErrRequested is wrapped by Request for a piece requested already and
	// still wanted: its answer is on the way.
	ErrRequested = errors.New("piecewire: piece requested already")
	// ErrFull is wrapped by Request when MaxOutstanding requests are
	// outstanding (cancelled ones among them, until their answers come):
	// ask on another path, or once an answer came.
	ErrFull = errors.New("piecewire: as many requests outstanding as the connection takes")
)

// RemoteError is an Error frame received from the server.
type RemoteError struct {
	Code    Code
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("piecewire: the server refused: %s: %s", e.Code, e.Message)
}

// Is makes a refused capability match ErrDenied.
func (e *RemoteError) Is(target error) bool { return target == ErrDenied && e.Code == CodeDenied }

// Result is the answer to one request.
type Result struct {
	// Index is the piece requested.
	Index int
	// Data is the piece, verified against the metainfo's piece hash when
	// it came; the receiver owns it (a buffer from ClientConfig.Buffer).
	Data []byte
	// Sink, instead of Data, is where the piece was written as it came
	// (ClientConfig.Sink), verified: the receiver must Commit or Abort it.
	Sink PieceSink
	// Sum is the piece's hash (metainfo.PieceDigester), computed as it
	// arrived and equal to the metainfo's: a receiver that checks pieces
	// again (a piece store) takes it instead of hashing the piece a second
	// time.
	Sum [sha256.Size]byte
	// Reject is why the server declined the request (zero when Data or
	// Err is set); RetryAfter goes with ReasonAtPeers. It is never
	// ReasonCancelled: a request the server dropped because it was
	// cancelled is either withdrawn or, wanted again, asked again.
	Reject     Reason
	RetryAfter time.Duration
	// Err is set for a piece that arrived corrupt (it wraps
	// metainfo.ErrCorruptPiece): the connection ends with it, and the
	// peer should be dropped.
	Err error
}

func (r Result) String() string {
	switch {
	case r.Err != nil:
		return fmt.Sprintf("piece %d: %v", r.Index, r.Err)
	case r.Reject != 0 && r.RetryAfter > 0:
		return fmt.Sprintf("piece %d: rejected, %s, retry after %s", r.Index, r.Reject, r.RetryAfter)
	case r.Reject != 0:
		return fmt.Sprintf("piece %d: rejected, %s", r.Index, r.Reject)
	}
	if r.Sink != nil {
		return fmt.Sprintf("piece %d: written", r.Index)
	}
	return fmt.Sprintf("piece %d: %d bytes", r.Index, len(r.Data))
}

// Conn is a client connection fetching pieces of one blob. Request and
// Cancel may be called from any goroutine; answers arrive on Results.
type Conn struct {
	nc net.Conn
	br *bufio.Reader
	// lowat is the connection's SO_RCVLOWAT (nil: none to set): piece
	// bytes are read a step at a time rather than as packets arrive.
	lowat *rcvLowat
	meta  *metainfo.Metainfo
	cap   string
	cfg   ClientConfig

	results chan Result
	done    chan struct{}
	// ctx ends with the connection: a wait for ingress tokens gives up.
	ctx    context.Context
	cancel context.CancelFunc

	wmu sync.Mutex // one writer at a time
	// writeClosed: CloseWrite closed this side (guarded by wmu).
	writeClosed bool

	// step is the reader's buffer for a piece written to a Sink.
	step []byte

	mu          sync.Mutex
	outstanding map[uint32]reqState // requested, not answered
	err         error
	// arriving is the piece whose bytes are being read (-1: none) and
	// arrived how many of them are in, for Arrived.
	arriving int
	arrived  int64
	// whole are the pieces read whole and verified, delivered to Results
	// or waiting to be, until requested again: Arrived reports them
	// complete, so that a caller withdrawing a request does not take a
	// piece that is already here for one not started.
	whole map[uint32]bool
}

// reqState is where an outstanding request stands.
type reqState uint8

const (
	wanted    reqState = iota
	cancelled          // a Cancel was sent: the answer is dropped
	// rewanted: requested again after a Cancel, before the answer; the
	// server may have dropped it (Reject ReasonCancelled: the connection
	// asks again) or may still send the piece.
	rewanted
)

// Dial connects to a piece server at addr for the blob meta describes,
// presenting capability with every request. With tlsConfig the connection
// is TLS (the server's listener must be too).
func Dial(ctx context.Context, addr string, tlsConfig *tls.Config, meta *metainfo.Metainfo, capability string, cfg ClientConfig) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("piecewire: dialing %s: %w", addr, err)
	}
	if tlsConfig != nil {
		tc := tls.Client(nc, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("piecewire: TLS handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	c, err := NewConn(nc, meta, capability, cfg)
	if err != nil {
		return nil, fmt.Errorf("piecewire: %s: %w", addr, err)
	}
	return c, nil
}

// NewConn starts a client on an open connection nc (which it closes when
// done): it sends the preface and starts reading answers.
func NewConn(nc net.Conn, meta *metainfo.Metainfo, capability string, cfg ClientConfig) (*Conn, error) {
	if len(capability) > MaxCapability {
		_ = nc.Close()
		return nil, fmt.Errorf("piecewire: a capability of %d bytes, at most %d", len(capability), MaxCapability)
	}
	cfg = cfg.withDefaults()
	c := &Conn{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), lowat: newRcvLowat(nc), meta: meta, cap: capability, cfg: cfg,
		results:     make(chan Result, cfg.MaxOutstanding),
		done:        make(chan struct{}),
		outstanding: map[uint32]reqState{}, arriving: -1, whole: map[uint32]bool{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if err := c.write(Preface[:]); err != nil {
		_ = nc.Close()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// Results delivers the answers to requests (not to cancelled ones). It is
// closed when the connection ends; Err then says why.
func (c *Conn) Results() <-chan Result { return c.results }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection at once. A server in the middle of an answer
// sees it broken (its write fails); CloseWrite ends it cleanly.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	return nil
}

// CloseWrite ends the connection from this side, cleanly: no request or
// cancel goes out after it (they fail with ErrClosed), and the server,
// reading the end of the client's side, answers what is outstanding (a
// cancelled request not started with a Reject, a piece on its way whole:
// read, and dropped if cancelled) and then closes its own; the connection
// ends then (Done; Err wraps ErrClosedByServer). On a connection that
// cannot be half-closed it is Close.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeClosed || c.Err() != nil {
		return nil
	}
	c.writeClosed = true
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok {
		c.fail(ErrClosed)
		return nil
	}
	if err := cw.CloseWrite(); err != nil {
		err = fmt.Errorf("piecewire: closing the connection's side: %w", err)
		c.fail(err)
		return err
	}
	return nil
}

// Request asks for piece i. It fails if the connection has ended, i is out
// of range or already outstanding (ErrRequested), or MaxOutstanding
// requests are (ErrFull). A piece cancelled and not yet answered is wanted
// again without a new frame: its answer is delivered after all, and if the
// server had dropped the request, or its answer was already being read and
// dropped, the connection asks for it again.
//
// A request that could not be written because the server had closed the
// connection fails with ErrClosedByServer and stays outstanding: the
// connection is ending, and Err says how once Results is closed (wrapping
// ErrClosedByServer too, unless an answer was cut short).
func (c *Conn) Request(i int) error {
	if i < 0 || i >= c.meta.NumPieces() {
		return fmt.Errorf("piecewire: requesting piece %d of %d", i, c.meta.NumPieces())
	}
	c.mu.Lock()
	st, ok := c.outstanding[uint32(i)]
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return err
	case ok && st == cancelled:
		c.outstanding[uint32(i)] = rewanted
		c.mu.Unlock()
		return nil
	case ok:
		c.mu.Unlock()
		return fmt.Errorf("%w: piece %d", ErrRequested, i)
	case len(c.outstanding) >= c.cfg.MaxOutstanding:
		n := len(c.outstanding)
		c.mu.Unlock()
		return fmt.Errorf("%w: requesting piece %d: %d requests outstanding already", ErrFull, i, n)
	}
	c.outstanding[uint32(i)] = wanted
	delete(c.whole, uint32(i))
	if len(c.outstanding) == 1 {
		// The reader may be waiting without a deadline (nothing was
		// expected); from now on the server owes an answer.
		_ = c.nc.SetReadDeadline(time.Now().Add(c.cfg.Timeout))
	}
	c.mu.Unlock()
	b, err := c.requestFrame(i)
	if err != nil {
		return err
	}
	return c.write(b)
}

func (c *Conn) requestFrame(i int) ([]byte, error) {
	return AppendFrame(nil, Frame{Type: FrameRequest, Index: uint32(i), Digest: c.meta.Digest.String(), Capability: c.cap})
}

// Arrived reports how many bytes of piece i have been read while its
// answer is arriving (in steps of 256 KiB); ok is true from the header of
// its Piece frame on. A piece read whole and verified reports its size
// from then on, while its Result waits in Results and after, until it is
// requested again. A caller deciding whether to withdraw a request uses
// it: Cancel cannot stop a piece already on its way, whose bytes are then
// read and thrown away, nor one already here (its Result is delivered
// all the same).
func (c *Conn) Arrived(i int) (n int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.arriving == i:
		return c.arrived, true
	case i >= 0 && c.whole[uint32(i)]:
		return c.meta.PieceSize(i), true
	}
	return 0, false
}

// Cancel withdraws the request of piece i. The server answers a request it
// had not started with nothing more; a piece already on its way still
// arrives and is discarded here. Cancelling a piece not outstanding does
// nothing.
func (c *Conn) Cancel(i int) error {
	c.mu.Lock()
	st, ok := c.outstanding[uint32(i)]
	if !ok || st == cancelled || c.err != nil {
		c.mu.Unlock()
		return nil
	}
	c.outstanding[uint32(i)] = cancelled
	c.mu.Unlock()
	if st == rewanted {
		return nil // its Cancel went out already
	}
	b, err := AppendFrame(nil, Frame{Type: FrameCancel, Index: uint32(i)})
	if err != nil {
		return err
	}
	return c.write(b)
}

func (c *Conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(b)
}

// writeLocked is write with wmu held.
func (c *Conn) writeLocked(b []byte) error {
	if c.writeClosed {
		return fmt.Errorf("%w: writing after CloseWrite", ErrClosed)
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.cfg.Timeout))
	if _, err := c.nc.Write(b); err != nil {
		switch {
		case isTimeout(err):
			err = fmt.Errorf("%w: writing a request: the server stopped reading (%s): %w", ErrTimeout, c.cfg.Timeout, err)
		case isClosedByPeer(err):
			// The server closed the connection, or reset it: the reader
			// meets that end too and ends the connection with what it
			// found there (a cut answer, or nothing: ErrClosedByServer).
			// Failing it here would hide which.
			return fmt.Errorf("%w: writing a request: %w", ErrClosedByServer, err)
		default:
			err = fmt.Errorf("piecewire: writing a request: %w", err)
		}
		c.fail(err)
		return err
	}
	return nil
}

// isClosedByPeer reports whether err is the other end closing or resetting
// the connection.
func isClosedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// fail ends the connection with err (the first error wins).
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.done)
	c.mu.Unlock()
	c.cancel()
	_ = c.nc.Close()
}

func (c *Conn) deliver(r Result) {
	select {
	case c.results <- r:
	case <-c.done:
		if r.Sink != nil {
			r.Sink.Abort()
		}
	}
}

func (c *Conn) readLoop() {
	defer close(c.results)
	for {
		if err := c.readAnswer(); err != nil {
			c.mu.Lock()
			closed := c.err != nil
			c.mu.Unlock()
			if !closed {
				c.fail(err)
			}
			return
		}
	}
}

// readAnswer reads one frame from the server and acts on it.
func (c *Conn) readAnswer() error {
	c.mu.Lock()
	if len(c.outstanding) > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.cfg.Timeout))
	} else {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()
	// Where the next frame would start, an end of the connection is the
	// server closing it; past its first byte, a cut frame.
	c.lowat.set(1) // a header's length is not known before it is read
	if _, err := c.br.Peek(1); err != nil {
		return c.frameErr(err)
	}
	f, err := ReadFrame(c.br)
	if err != nil {
		return c.readErr("reading an answer", err)
	}
	switch f.Type {
	case FramePiece:
		// The request stays outstanding while its bytes arrive, so that a
		// Cancel meanwhile still drops them.
		st, err := c.answering(f, false)
		if err != nil {
			return err
		}
		size := c.meta.PieceSize(int(f.Index))
		if int64(f.Length) != size {
			return fmt.Errorf("%w: piece %d announced with %d bytes, it has %d", ErrProtocol, f.Index, f.Length, size)
		}
		if st == cancelled {
			if err := c.discard(f.Index, size); err != nil {
				return err
			}
			// Requested again while its bytes were dropped, the server
			// owes nothing more (this was its answer): asked again, as
			// after a request it had dropped.
			return c.dropped(f)
		}
		r, err := c.receive(int(f.Index), size)
		st = c.received(f.Index, err == nil)
		if errors.Is(err, metainfo.ErrCorruptPiece) {
			c.deliver(Result{Index: int(f.Index), Err: err})
		}
		if err != nil || st == cancelled {
			if err == nil && r.Sink != nil {
				r.Sink.Abort()
			}
			return err
		}
		c.deliver(r)
	case FrameReject:
		if f.Reason == ReasonCancelled {
			return c.dropped(f)
		}
		st, err := c.answering(f, true)
		if err != nil {
			return err
		}
		if st != cancelled {
			c.deliver(Result{Index: int(f.Index), Reject: f.Reason, RetryAfter: time.Duration(f.RetryAfterMs) * time.Millisecond})
		}
	case FrameError:
		return &RemoteError{Code: f.Code, Message: f.Message}
	default:
		return fmt.Errorf("%w: a %s frame from a server", ErrProtocol, f.Type)
	}
	return nil
}

// dropped ends the request f answers, which the server dropped because it
// was cancelled (or whose bytes were dropped here for that reason). A piece
// requested again since is asked for again, here rather than by the
// caller: told to, the caller could not tell that answer from one to a
// request it made after it, and would ask twice. wmu is held from the
// look at the request to its frame, so that a Cancel the caller makes
// meanwhile goes out after it.
func (c *Conn) dropped(f Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	st, ok := c.outstanding[f.Index]
	switch {
	case !ok:
		c.mu.Unlock()
		return unrequested(f)
	case st == wanted:
		c.mu.Unlock()
		return fmt.Errorf("%w: piece %d rejected as cancelled, and it was not", ErrProtocol, f.Index)
	case st == cancelled || c.writeClosed:
		delete(c.outstanding, f.Index)
		c.mu.Unlock()
		return nil
	}
	c.outstanding[f.Index] = wanted
	c.mu.Unlock()
	b, err := c.requestFrame(int(f.Index))
	if err != nil {
		return err
	}
	if err := c.writeLocked(b); err != nil && !errors.Is(err, ErrClosedByServer) {
		return err
	}
	// A server that closed the connection: the next read meets its end.
	return nil
}

// unrequested is the protocol violation of an answer f to no outstanding
// request.
func unrequested(f Frame) error {
	return fmt.Errorf("%w: a %s frame for piece %d, which was never requested (or was answered already)", ErrProtocol, f.Type, f.Index)
}

// answering looks up the request f answers and returns where it stands;
// with done it also takes the request off the outstanding ones, without
// it (a Piece frame's header) it starts the piece's arrival for Arrived,
// unless the request was cancelled. An answer to nothing asked is a
// protocol violation.
func (c *Conn) answering(f Frame, done bool) (reqState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.outstanding[f.Index]
	if !ok {
		return 0, unrequested(f)
	}
	if done {
		delete(c.outstanding, f.Index)
	} else if f.Type == FramePiece && st != cancelled {
		// Its bytes follow: started for Arrived in the same step, so that
		// it never looks not started once it is on its way here.
		c.arriving, c.arrived = int(f.Index), 0
	}
	return st, nil
}

// received takes the request of piece i, whose bytes were read (ok: whole
// and verified), off the outstanding ones and returns where it stood. In
// the same step a piece that is to be delivered becomes whole for
// Arrived, so that it never looks not started in between.
func (c *Conn) received(i uint32, ok bool) reqState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.outstanding[i]
	delete(c.outstanding, i)
	c.arriving, c.arrived = -1, 0
	if ok && st != cancelled {
		c.whole[i] = true
	}
	return st
}

// receive reads piece i's size bytes into a Sink's piece, or else a
// buffer, hashing them as they arrive (no second pass), and returns the
// piece (Data or Sink, and Sum) if the hash matches; a Sink's piece that
// does not is aborted. Arrived follows it (answering started it at the
// piece's header; the caller ends it with received).
func (c *Conn) receive(i int, size int64) (Result, error) {
	r := Result{Index: i}
	h, err := c.meta.PieceDigester(i)
	if err != nil {
		return r, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	var sink PieceSink
	if c.cfg.Sink != nil {
		if s, err := c.cfg.Sink(i); err == nil {
			sink = s
		}
	}
	var buf []byte
	if sink != nil {
		if c.step == nil {
			c.step = make([]byte, readStep)
		}
	} else {
		buf = c.cfg.Buffer(size)[:size]
	}
	for off := int64(0); off < size; {
		n := min(readStep, size-off)
		var b []byte
		if sink != nil {
			b = c.step[:n]
		} else {
			b = buf[off : off+n]
		}
		err := c.meter(n)
		if err == nil {
			_ = c.nc.SetReadDeadline(time.Now().Add(c.cfg.Timeout))
			if err = c.readFull(b); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF // inside a piece
				}
				err = c.readErr(fmt.Sprintf("reading piece %d at %d of %d bytes", i, off, size), err)
			}
		}
		if err == nil && sink != nil {
			if _, err = sink.Write(b); err != nil {
				err = fmt.Errorf("piecewire: piece %d: %w", i, err)
			}
		}
		if err != nil {
			if sink != nil {
				sink.Abort()
			}
			return r, err
		}
		_, _ = h.Write(b)
		off += n
		c.setArrived(i, off)
		c.progress(i)
	}
	if err := h.Verify(); err != nil {
		if sink != nil {
			sink.Abort()
		}
		return r, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	r.Data, r.Sink, r.Sum = buf, sink, h.Sum()
	return r, nil
}

func (c *Conn) setArrived(i int, n int64) {
	c.mu.Lock()
	c.arriving, c.arrived = i, n
	c.mu.Unlock()
}

// meter waits for the ingress bucket's tokens for n bytes about to be
// read, if there is a bucket.
func (c *Conn) meter(n int64) error {
	if l := c.cfg.Ingress; l != nil {
		if err := l.WaitN(c.ctx, int(n)); err != nil {
			return fmt.Errorf("piecewire: waiting for ingress budget: %w", err)
		}
	}
	return nil
}

// readFull reads len(b) bytes of a piece. With a low-water mark, a read
// that finds too few bytes waits for the rest of b at once rather than
// for each packet: b is never more than what is left of the piece, which
// the server sends whole or not at all (it ends the connection).
func (c *Conn) readFull(b []byte) error {
	if c.lowat == nil {
		_, err := io.ReadFull(c.br, b)
		return err
	}
	for got := 0; got < len(b); {
		if c.br.Buffered() == 0 {
			c.lowat.set(len(b) - got)
		}
		n, err := c.br.Read(b[got:])
		got += n
		if err != nil && got < len(b) {
			return err // io.EOF too: the caller knows it is inside a piece
		}
	}
	return nil
}

// discard reads and drops a piece whose request was cancelled.
func (c *Conn) discard(i uint32, size int64) error {
	for off := int64(0); off < size; {
		n := min(readStep, size-off)
		if err := c.meter(n); err != nil {
			return err
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(c.cfg.Timeout))
		m, err := c.br.Discard(int(n))
		off += int64(m)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // inside a piece
		}
		if err != nil {
			return c.readErr(fmt.Sprintf("discarding cancelled piece %d at %d of %d bytes", i, off, size), err)
		}
		c.progress(int(i))
	}
	return nil
}

// progress tells ClientConfig.Progress that a step of piece i arrived.
func (c *Conn) progress(i int) {
	if c.cfg.Progress != nil {
		c.cfg.Progress(i)
	}
}

func (c *Conn) readErr(what string, err error) error {
	switch {
	case isTimeout(err):
		return fmt.Errorf("%w: %s: nothing for %s: %w", ErrTimeout, what, c.cfg.Timeout, err)
	case errors.Is(err, ErrProtocol):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %w: %s: the connection ended: %w", ErrProtocol, ErrTruncated, what, err)
	}
	return fmt.Errorf("piecewire: %s: %w", what, err)
}

// frameErr describes a failure to read the first byte of the next frame:
// between frames, an end (or a reset) of the connection is the server
// closing it, not a truncated frame.
func (c *Conn) frameErr(err error) error {
	if isClosedByPeer(err) {
		c.mu.Lock()
		n := len(c.outstanding)
		c.mu.Unlock()
		return fmt.Errorf("%w with %d requests unanswered: %w", ErrClosedByServer, n, err)
	}
	return c.readErr("reading an answer", err)
}
