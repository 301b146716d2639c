package hdfs

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/colinmarc/hdfs/v2"
)

// pool spreads calls over several HDFS clients. An hdfs.Client holds one
// namenode connection and sends one call at a time on it, so a driver with a
// single client would queue every request of a busy origin behind the
// slowest namenode call.
//
// A client whose namenode connection failed is retired and replaced before it
// is handed out again. After a failed call the library refuses every call for
// 5 s without dialing ("no available namenodes"), and its lease renewer calls
// the namenode every second whether the client is busy or idle: by the time a
// restarted namenode serves again, every client has failed, and those that
// failed in the last 5 s would fail the first requests made on them. So the
// pool follows each client's namenode connection itself (namenodeLink) rather
// than learn of its failure from a request. A retired client is closed once
// nothing (an open reader or writer) uses it any more, because closing it
// earlier would drop the HDFS lease of a file being written through it.
type pool struct {
	opts  hdfs.ClientOptions
	slots []*slot
	next  atomic.Uint32
}

type slot struct {
	mu     sync.Mutex // held while dialing, so that one slot dials once
	c      *client
	closed bool
}

// client is a pooled hdfs.Client with a count of its users.
type client struct {
	*hdfs.Client
	defaults hdfs.ServerDefaults // replication and block size for new files
	slot     *slot
	namenode *namenodeLink // whether its namenode connection still works
	refs     int           // guarded by slot.mu
	retired  bool
	// closeOnce: the library's Close panics when called twice, and both
	// the pool's close and the last release of a retired client close it.
	closeOnce sync.Once
}

// shut closes the client's connections once, whoever asks first.
func (c *client) shut() {
	c.closeOnce.Do(func() { _ = c.Client.Close() })
}

var errClosed = errors.New("driver is closed")

func newPool(opts hdfs.ClientOptions, n int) *pool {
	p := &pool{opts: opts, slots: make([]*slot, n)}
	for i := range p.slots {
		p.slots[i] = &slot{}
	}
	return p
}

// get returns a client, connecting one if its slot is empty or holds a
// client whose namenode connection failed. The caller must pass it to put
// when done.
func (p *pool) get() (*client, error) {
	s := p.slots[int(p.next.Add(1))%len(p.slots)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if s.c != nil && s.c.namenode.broken() {
		s.retire(s.c)
	}
	if s.c == nil {
		c, err := p.dial(s)
		if err != nil {
			return nil, err
		}
		s.c = c
	}
	s.c.refs++
	return s.c, nil
}

// dial connects a new client for slot s.
func (p *pool) dial(s *slot) (*client, error) {
	link := &namenodeLink{}
	opts := p.opts
	opts.NamenodeDialFunc = link.watch(opts.NamenodeDialFunc)
	hc, err := hdfs.NewClient(opts)
	if err != nil {
		return nil, err
	}
	// The library caches the server defaults in the Client on first use
	// without a lock, and reads them on every create and datanode
	// connection: a data race when the client is shared. Fetch them here,
	// before any other goroutine sees the client.
	def, err := hc.ServerDefaults()
	if err != nil {
		_ = hc.Close()
		return nil, err
	}
	return &client{Client: hc, slot: s, defaults: def, namenode: link}, nil
}

// put hands a client back. err is the outcome of what it was used for: a
// connection failure retires the client.
func (p *pool) put(c *client, err error) {
	p.release(c, err != nil && isConnFailure(err))
}

// discard hands back a client that must not be used again. A writer whose
// file could not be completed leaves that file's lease with its client, and
// the client renews the leases it holds every second for as long as it
// lives: the file would stay locked against every other writer. Closing the
// client stops the renewal, so the lease expires (60 s) and the file can be
// recovered by the next writer.
func (p *pool) discard(c *client) { p.release(c, true) }

func (p *pool) release(c *client, retire bool) {
	s := c.slot
	s.mu.Lock()
	defer s.mu.Unlock()
	c.refs--
	if retire || c.retired {
		// Again for a retired client, so that its last user closes it.
		s.retire(c)
	}
}

// retire takes c out of service: the slot connects a new client on next
// use, and c is closed once nobody uses it (now, or by the last release).
// s.mu must be held.
func (s *slot) retire(c *client) {
	c.retired = true
	if s.c == c {
		s.c = nil
	}
	if c.refs == 0 {
		c.shut()
	}
}

// close closes every client, in use or not.
func (p *pool) close() error {
	for _, s := range p.slots {
		s.mu.Lock()
		s.closed = true
		if s.c != nil {
			s.c.retired = true
			s.c.shut()
			s.c = nil
		}
		s.mu.Unlock()
	}
	return nil
}

// dialFunc dials a namenode or a datanode, as hdfs.ClientOptions takes it.
type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// dialer returns a dial function whose connections time out each read and
// write after ioTimeout. The HDFS client sets no deadline on namenode calls,
// so without this a namenode that accepts connections but does not answer
// (a GC pause, a hung host) would hang every request forever instead of
// failing with an error the origin turns into 503.
func dialer(dialTimeout, ioTimeout time.Duration) dialFunc {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &timeoutConn{Conn: c, timeout: ioTimeout}, nil
	}
}

// timeoutConn renews a deadline before every read and write, so that a slow
// but progressing transfer never times out and a stalled one does.
type timeoutConn struct {
	net.Conn
	timeout time.Duration
}

func (c *timeoutConn) Read(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *timeoutConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// namenodeLink follows the namenode connection of one client: whether the
// connection the library uses now has failed. The library keeps that state
// to itself, and learns of a failure only by failing a call; it dials only
// in the call that replaces a failed connection, so the last connection it
// dialed is the one it uses.
type namenodeLink struct {
	current atomic.Pointer[watchedConn] // nil before the first dial and after a failed one
}

// broken reports whether the client's last namenode dial failed or its
// connection has since failed a read or write or been closed: its next call
// would fail, or wait out the library's backoff.
func (l *namenodeLink) broken() bool {
	c := l.current.Load()
	return c == nil || c.failed.Load()
}

// watch wraps a namenode dial function so that l follows what it returns.
func (l *namenodeLink) watch(dial dialFunc) dialFunc {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext // the library's default
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			l.current.Store(nil)
			return nil, err
		}
		w := &watchedConn{Conn: c}
		l.current.Store(w)
		return w, nil
	}
}

// watchedConn records that its connection failed. Any error counts, timeouts
// included: the library keeps a connection whose read timed out, and the
// late answer would then be taken for the answer to the next call.
type watchedConn struct {
	net.Conn
	failed atomic.Bool
}

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.failed.Store(true)
	}
	return n, err
}

func (c *watchedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.failed.Store(true)
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.failed.Store(true)
	return c.Conn.Close()
}
