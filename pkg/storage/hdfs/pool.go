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
// A client whose connection failed is retired and replaced on next use: the
// library would reconnect by itself, but only after returning one more error
// on the dead connection and waiting out a 5 s backoff, which would delay
// recovery after a namenode restart. A retired client is closed once nothing
// (an open reader or writer) uses it any more, because closing it earlier
// would drop the HDFS lease of a file being written through it.
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
	refs     int // guarded by slot.mu
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

// get returns a client, connecting one if its slot is empty. The caller
// must pass it to put when done.
func (p *pool) get() (*client, error) {
	s := p.slots[int(p.next.Add(1))%len(p.slots)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if s.c == nil {
		hc, err := hdfs.NewClient(p.opts)
		if err != nil {
			return nil, err
		}
		// The library caches the server defaults in the Client on first
		// use without a lock, and reads them on every create and datanode
		// connection: a data race when the client is shared. Fetch them
		// here, before any other goroutine sees the client.
		def, err := hc.ServerDefaults()
		if err != nil {
			_ = hc.Close()
			return nil, err
		}
		s.c = &client{Client: hc, slot: s, defaults: def}
	}
	s.c.refs++
	return s.c, nil
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
	if retire && !c.retired {
		c.retired = true
		if s.c == c {
			s.c = nil
		}
	}
	if c.retired && c.refs == 0 {
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

// dialer returns a dial function whose connections time out each read and
// write after ioTimeout. The HDFS client sets no deadline on namenode calls,
// so without this a namenode that accepts connections but does not answer
// (a GC pause, a hung host) would hang every request forever instead of
// failing with an error the origin turns into 503.
func dialer(dialTimeout, ioTimeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
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
