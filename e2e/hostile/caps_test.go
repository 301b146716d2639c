package hostile_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

// attackerAddr is the attacker's source address: any 127.0.0.0/8 address
// reaches the origin on 127.0.0.1, and the honest clients come from
// 127.0.0.1, so the two count as different clients.
const attackerAddr = "127.0.0.2"

// newClientFrom is a client whose connections come from local address from.
func newClientFrom(t testing.TB, s *testenv.Server, from string) *client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	return &client{t: t, base: s.URL(), http: &http.Client{Timeout: 2 * time.Minute,
		Transport: &http.Transport{DialContext: d.DialContext}}}
}

// holdConnection opens a connection from from, makes one request on it and
// keeps it open (idle, kept alive) until the test ends or close.
func holdConnection(t *testing.T, s *testenv.Server, from string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatalf("attacker dialing the origin: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(c, "GET /v2/ HTTP/1.1\r\nHost: origin\r\n\r\n"); err != nil {
		t.Fatalf("attacker's request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("attacker's answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a connection under the cap answered %d, want 200", resp.StatusCode)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// TestAnAddressHoldingItsConnectionCapDoesNotStopOthers: one address opens
// the most connections it may and keeps them; its next is answered 429
// with Retry-After at once, and honest clients push and pull meanwhile.
// Once it lets go, it is served again.
func TestAnAddressHoldingItsConnectionCapDoesNotStopOthers(t *testing.T) {
	const capPerClient = 8
	o := startOrigin(t, "file://"+t.TempDir(), fmt.Sprintf("connections:\n  maxPerClient: %d\n  exempt: []\n", capPerClient))
	var held []net.Conn
	for range capPerClient {
		held = append(held, holdConnection(t, o, attackerAddr))
	}
	eventually.True(t, fmt.Sprintf("the origin to count the attacker's %d connections", capPerClient), func() bool {
		return metrics(t, o).Sum("shoal_origin_connections_open") >= capPerClient
	})

	attacker := newClientFrom(t, o, attackerAddr)
	a := attacker.do("GET", "/v2/", nil)
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" {
		t.Fatalf("connection %d of one address: %v (Retry-After %q), want 429 with Retry-After", capPerClient+1, a, a.header.Get("Retry-After"))
	}
	if n := metrics(t, o).Sum("shoal_origin_connections_refused_total", "reason", "per_client"); n < 1 {
		t.Errorf("shoal_origin_connections_refused_total{reason=per_client} = %v after a refusal, want at least 1", n)
	}

	c := newClient(t, o)
	c.pushImage("team/app", "v1", randomBytes(t, 1<<20))
	c.pushImage("team/other", "v1", randomBytes(t, 64<<10))

	for _, h := range held {
		h.Close()
	}
	eventually.True(t, "the attacker's address to be served again after closing its connections", func() bool {
		return attacker.do("GET", "/v2/", nil).status == http.StatusOK
	})
}

// TestAClientAtItsUploadSessionCapDoesNotStopOthers: one address opens the
// most upload sessions it may and leaves them open; its next is refused
// with 429 TOOMANYREQUESTS and Retry-After, while honest clients push.
func TestAClientAtItsUploadSessionCapDoesNotStopOthers(t *testing.T) {
	const capPerClient = 4
	o := startOrigin(t, "file://"+t.TempDir(), fmt.Sprintf("registry:\n  maxUploadSessionsPerClient: %d\n", capPerClient))
	attacker := newClientFrom(t, o, attackerAddr)
	for range capPerClient {
		attacker.expect(attacker.do("POST", "/v2/attacker/junk/blobs/uploads/", nil), http.StatusAccepted, "attacker's session under the cap")
	}
	a := attacker.do("POST", "/v2/attacker/junk/blobs/uploads/", nil)
	if a.status != http.StatusTooManyRequests || a.ociCode() != "TOOMANYREQUESTS" || a.header.Get("Retry-After") == "" {
		t.Fatalf("session %d of one client: %v (Retry-After %q), want 429 TOOMANYREQUESTS with Retry-After", capPerClient+1, a, a.header.Get("Retry-After"))
	}
	if n := metrics(t, o).Sum("shoal_origin_limit_refusals_total", "limit", "upload_sessions"); n != 1 {
		t.Errorf("shoal_origin_limit_refusals_total{limit=upload_sessions} = %v, want 1", n)
	}
	c := newClient(t, o)
	for i := range capPerClient + 2 {
		c.pushImage("team/app", fmt.Sprintf("v%d", i), randomBytes(t, 256<<10))
	}
}

// TestAnAddressHoldingItsConnectionCapOnTheMirrorDoesNotStopOthers: the
// agent's mirror listener caps connections per address as the origin's
// does; honest pulls through it go on while one address holds its cap.
func TestAnAddressHoldingItsConnectionCapOnTheMirrorDoesNotStopOthers(t *testing.T) {
	const capPerClient = 4
	o := startOrigin(t, "file://"+t.TempDir(), "")
	layer := randomBytes(t, 1<<20)
	c := newClient(t, o)
	d := sha256Digest(layer)
	c.expect(c.do("POST", "/v2/team/app/blobs/uploads/?digest="+d, layer), http.StatusCreated, "layer push")
	config := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, "connections:\n  maxPerClient: %d\n  exempt: []\n", capPerClient), 0o644); err != nil {
		t.Fatal(err)
	}
	a := testenv.Agent(t, testenv.AgentOptions{Origin: o.URL(), Args: []string{"--config", config}})
	for range capPerClient {
		holdConnection(t, a.Server, attackerAddr)
	}
	attacker := newClientFrom(t, a.Server, attackerAddr)
	if r := attacker.do("GET", "/v2/", nil); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("connection %d of one address to the mirror: %v (Retry-After %q), want 429 with Retry-After", capPerClient+1, r, r.header.Get("Retry-After"))
	}
	honest := newClient(t, a.Server)
	if got := honest.expect(honest.do("GET", "/v2/team/app/blobs/"+d, nil), http.StatusOK, "honest pull through the mirror").body; !bytes.Equal(got, layer) {
		t.Fatalf("the mirror served %d bytes, want the %d pushed", len(got), len(layer))
	}
	if n := metrics(t, a.Server).Sum("shoal_agent_connections_refused_total", "reason", "per_client"); n < 1 {
		t.Errorf("shoal_agent_connections_refused_total{reason=per_client} = %v after a refusal, want at least 1", n)
	}
}
