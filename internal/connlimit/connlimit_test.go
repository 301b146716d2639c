package connlimit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/internal/eventually"
)

// serve runs an HTTP server on a capped loopback listener and returns its
// address and listener.
func serve(t *testing.T, cfg Config, m *Metrics) (string, *Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := Wrap(ln, cfg, true, m)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = hs.Serve(cl) }()
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String(), cl
}

// dialFrom opens a connection to addr from local address from (any
// 127.0.0.0/8 address reaches a loopback listener).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dialing %s from %s: %v", addr, from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends GET / on c and returns the response, read whole.
func get(t *testing.T, c net.Conn) (*http.Response, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("sending a request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestAClientPastItsCapIsAnswered429AndOthersAreServed(t *testing.T) {
	m := NewOriginMetrics(prometheus.NewRegistry())
	addr, ln := serve(t, Config{MaxPerClient: 3}, m)
	attacker := netip.MustParseAddr("127.0.0.2")
	var held []net.Conn
	for range 3 {
		c := dialFrom(t, "127.0.0.2", addr)
		if resp, _ := get(t, c); resp.StatusCode != http.StatusOK {
			t.Fatalf("a connection under the cap answered %d, want 200", resp.StatusCode)
		}
		held = append(held, c)
	}
	eventually.True(t, "the listener to count the client's 3 connections", func() bool { return ln.Open(attacker) == 3 })

	resp, body := get(t, dialFrom(t, "127.0.0.2", addr))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("the 4th connection of one client: %d (Retry-After %q) %q, want 429 with Retry-After: 1",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if got := testutil.ToFloat64(m.refused.WithLabelValues(ReasonPerClient)); got != 1 {
		t.Errorf("test_connections_refused_total{reason=per_client} = %v, want 1", got)
	}
	// Another address is served; the capped client's connections too.
	if resp, _ := get(t, dialFrom(t, "127.0.0.1", addr)); resp.StatusCode != http.StatusOK {
		t.Errorf("another client answered %d while the first held its cap, want 200", resp.StatusCode)
	}
	if resp, _ := get(t, held[0]); resp.StatusCode != http.StatusOK {
		t.Errorf("a connection the capped client already had answered %d, want 200", resp.StatusCode)
	}

	// Closing one gives its slot back.
	held[0].Close()
	eventually.True(t, "a closed connection to give its slot back", func() bool { return ln.Open(attacker) == 2 })
	if resp, _ := get(t, dialFrom(t, "127.0.0.2", addr)); resp.StatusCode != http.StatusOK {
		t.Errorf("a connection after one closed answered %d, want 200", resp.StatusCode)
	}
}

func TestExemptClientsAreNotCapped(t *testing.T) {
	addr, ln := serve(t, Config{MaxPerClient: 1, Exempt: []string{"127.0.0.3", "10.0.0.0/8"}}, nil)
	for range 3 {
		if resp, _ := get(t, dialFrom(t, "127.0.0.3", addr)); resp.StatusCode != http.StatusOK {
			t.Fatalf("an exempt client answered %d, want 200", resp.StatusCode)
		}
	}
	if n := ln.Open(netip.MustParseAddr("127.0.0.3")); n != 0 {
		t.Errorf("an exempt client counted %d connections against a cap, want none", n)
	}
}

func TestACapOfZeroIsOff(t *testing.T) {
	addr, _ := serve(t, Config{MaxPerClient: 0}, nil)
	for range 5 {
		if resp, _ := get(t, dialFrom(t, "127.0.0.2", addr)); resp.StatusCode != http.StatusOK {
			t.Fatalf("with the cap off a connection answered %d, want 200", resp.StatusCode)
		}
	}
}

// Over TLS there is no HTTP before the handshake: a refused connection is
// closed without a word.
func TestARefusedTLSConnectionIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := Wrap(ln, Config{MaxPerClient: 1}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := cl.Accept(); err != nil {
				return
			}
		}
	}()
	dialFrom(t, "127.0.0.2", ln.Addr().String())
	eventually.True(t, "the first connection to be counted", func() bool { return cl.Open(netip.MustParseAddr("127.0.0.2")) == 1 })
	c := dialFrom(t, "127.0.0.2", ln.Addr().String())
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 10)); err == nil || n > 0 {
		t.Fatalf("a refused TLS connection read %d bytes, err %v; want it closed with nothing sent", n, err)
	}
}

func TestIPv6ClientsCountByTheir64(t *testing.T) {
	for _, c := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
	} {
		if pa, pb := clientPrefix(netip.MustParseAddr(c.a)), clientPrefix(netip.MustParseAddr(c.b)); pa != pb {
			t.Errorf("%s counts as %s and %s as %s, want one client", c.a, pa, c.b, pb)
		}
	}
	if clientPrefix(netip.MustParseAddr("2001:db8:1:2::1")) == clientPrefix(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Error("addresses of two /64s count as one client")
	}
}

func TestConfigValidation(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("the default config: %v", err)
	}
	for _, bad := range []Config{{MaxPerClient: -1}, {MaxPerClient: 1, Exempt: []string{"not-an-address"}}} {
		if bad.Validate() == nil {
			t.Errorf("config %+v validated, want an error", bad)
		}
	}
}

// net/http sends files with sendfile only through the connection's
// ReadFrom; the wrapper must not hide it.
func TestAcceptedConnectionsKeepReadFrom(t *testing.T) {
	var c net.Conn = &conn{}
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Fatal("a capped connection is not an io.ReaderFrom")
	}
}
