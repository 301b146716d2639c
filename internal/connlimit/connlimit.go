// Package connlimit caps the connections one client holds open on an HTTP
// listener. A client past its cap is answered at once, before any request
// is read by the server: 429 Too Many Requests with Retry-After on a
// plain-HTTP listener, a closed connection on a TLS one (there is no HTTP
// to speak before the handshake). Either way it never waits in a queue, and
// the connections it already has keep being served.
//
// A client is a remote address; IPv6 addresses count by their /64, since
// one host usually holds a whole /64 and could otherwise take a fresh
// address per connection.
package connlimit

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config caps the connections per client of one listener.
type Config struct {
	// MaxPerClient is the most connections one client address may hold
	// open at once; the next is refused. 0 turns the cap off. The default
	// of the binaries is 256: far more than a registry client or an agent
	// opens (dockerd pulls three layers at a time, an agent's connections
	// to the origin are pooled), few enough that one address cannot take
	// the file descriptors and goroutines every other client needs.
	MaxPerClient int `yaml:"maxPerClient"`
	// Exempt lists addresses and CIDR prefixes that are never capped. The
	// default exempts loopback (127.0.0.0/8, ::1), where a proxy on the
	// same host (nginx, a sidecar) makes every client look like one
	// address; add the address of any load balancer or proxy in front of
	// the listener for the same reason.
	Exempt []string `yaml:"exempt"`
}

// DefaultConfig is the cap the binaries run with when given nothing.
func DefaultConfig() Config {
	return Config{MaxPerClient: 256, Exempt: []string{"127.0.0.0/8", "::1/128"}}
}

// Validate reports a setting that cannot be applied.
func (c Config) Validate() error {
	if c.MaxPerClient < 0 {
		return errors.New("maxPerClient must not be negative (0 turns the cap off)")
	}
	_, err := parsePrefixes(c.Exempt)
	return err
}

func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("exempt: %q is neither an address nor a CIDR prefix", s)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}

// Metrics are a listener's counters; NewMetrics registers them under a
// component's prefix.
type Metrics struct {
	refused *prometheus.CounterVec
	open    prometheus.Gauge
}

// Reasons a connection was refused, the reason label of
// <prefix>_connections_refused_total.
const (
	// ReasonPerClient: the client already held MaxPerClient connections.
	ReasonPerClient = "per_client"
)

// The metrics' help texts, the same for every capped listener.
const (
	refusedHelp = "Connections refused as soon as they were accepted, by reason (per_client: the client address held its maxPerClient connections)."
	openHelp    = "Connections open on the listener, exempt clients included."
)

// NewOriginMetrics makes the metrics of the origin's registry listener,
// shoal_origin_connections_refused_total{reason} and
// shoal_origin_connections_open, registered with reg when it is not nil.
// Each component's names are written out, not built from a prefix, so that
// the metric names are in the code as they are scraped (the dashboard test
// reads them there).
func NewOriginMetrics(reg prometheus.Registerer) *Metrics {
	return register(reg,
		prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_origin_connections_refused_total", Help: refusedHelp}, []string{"reason"}),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_origin_connections_open", Help: openHelp}))
}

// NewAgentMetrics makes the metrics of the agent's mirror listener,
// shoal_agent_connections_refused_total{reason} and
// shoal_agent_connections_open, registered with reg when it is not nil.
func NewAgentMetrics(reg prometheus.Registerer) *Metrics {
	return register(reg,
		prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_connections_refused_total", Help: refusedHelp}, []string{"reason"}),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_agent_connections_open", Help: openHelp}))
}

func register(reg prometheus.Registerer, refused *prometheus.CounterVec, open prometheus.Gauge) *Metrics {
	if reg != nil {
		reg.MustRegister(refused, open)
	}
	return &Metrics{refused: refused, open: open}
}

// RetryAfter is what a refused client is told to wait, in whole seconds:
// one of its connections is likely to have closed by then.
const RetryAfter = time.Second

// maxRefusing bounds the refusals being written at once; a flood past it
// is closed without an answer rather than given a goroutine each.
const maxRefusing = 64

// refusalDeadline bounds the time spent answering one refused connection.
const refusalDeadline = 2 * time.Second

// Listener is a net.Listener that caps the connections per client.
type Listener struct {
	net.Listener
	max     int
	exempt  []netip.Prefix
	plain   bool
	metrics *Metrics

	mu   sync.Mutex
	open map[netip.Prefix]int
	// refusing holds a token per refusal being written.
	refusing chan struct{}
}

// Wrap caps the connections per client of ln. plainHTTP says the listener
// serves HTTP without TLS, so that a refused client can be answered 429;
// over TLS it is closed instead. metrics may be nil.
func Wrap(ln net.Listener, cfg Config, plainHTTP bool, metrics *Metrics) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("connection cap: %w", err)
	}
	exempt, _ := parsePrefixes(cfg.Exempt)
	if metrics == nil {
		metrics = NewOriginMetrics(nil) // unregistered: counted, never scraped
	}
	return &Listener{Listener: ln, max: cfg.MaxPerClient, exempt: exempt, plain: plainHTTP, metrics: metrics,
		open: make(map[netip.Prefix]int), refusing: make(chan struct{}, maxRefusing)}, nil
}

// Accept returns the next connection of a client under its cap, refusing
// the others on the way.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client, capped := l.clientOf(c.RemoteAddr())
		if !capped || l.max == 0 {
			l.metrics.open.Inc()
			return &conn{Conn: c, release: func() { l.metrics.open.Dec() }}, nil
		}
		l.mu.Lock()
		if l.open[client] >= l.max {
			l.mu.Unlock()
			l.metrics.refused.WithLabelValues(ReasonPerClient).Inc()
			l.refuse(c)
			continue
		}
		l.open[client]++
		l.mu.Unlock()
		l.metrics.open.Inc()
		return &conn{Conn: c, release: func() { l.release(client) }}, nil
	}
}

func (l *Listener) release(client netip.Prefix) {
	l.metrics.open.Dec()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[client]--; l.open[client] <= 0 {
		delete(l.open, client)
	}
}

// Open returns how many connections client (an address) holds open.
func (l *Listener) Open(client netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[clientPrefix(client)]
}

// clientOf returns the client an address counts as, and whether it is
// capped at all.
func (l *Listener) clientOf(a net.Addr) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		// Not an IP listener (a Unix socket): one local client, not capped.
		return netip.Prefix{}, false
	}
	addr := ap.Addr().Unmap()
	for _, p := range l.exempt {
		if p.Contains(addr) {
			return netip.Prefix{}, false
		}
	}
	return clientPrefix(addr), true
}

// clientPrefix is the address itself for IPv4, its /64 for IPv6.
func clientPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p
	}
	return netip.PrefixFrom(a, 32)
}

// refusal is the whole answer to a refused plain-HTTP client.
var refusal = func() []byte {
	body := "too many connections from your address; close some, or retry after " +
		strconv.Itoa(int(RetryAfter/time.Second)) + "s\n"
	return []byte("HTTP/1.1 429 Too Many Requests\r\n" +
		"Retry-After: " + strconv.Itoa(int(RetryAfter/time.Second)) + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Connection: close\r\n\r\n" + body)
}()

// refuse answers a refused connection and closes it, in the background so
// that Accept goes on at once.
func (l *Listener) refuse(c net.Conn) {
	if !l.plain {
		c.Close()
		return
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refusalDeadline))
		// Read the request's first bytes before answering: closing a
		// socket with unread input sends a reset, which the client may
		// see before the answer.
		var buf [4096]byte
		_, _ = c.Read(buf[:])
		if _, err := c.Write(refusal); err != nil {
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
			// Drain what else the client sends until it closes, so that
			// the close after it is not a reset either.
			_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<20))
		}
	}()
}

// conn is an accepted connection that gives its client's slot back once
// closed.
type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// ReadFrom keeps the TCP connection's ReadFrom reachable: net/http sends a
// file with sendfile only through it.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite keeps the TCP half-close net/http uses to end a connection
// gracefully.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
