package hostile_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/testpki"
)

// h2StreamCap is the origin's documented cap on one HTTP/2 connection's
// streams in flight (docs/origin.md, Limits).
const h2StreamCap = 100

// TestOneHTTP2ConnectionCannotHoldMoreThanItsStreamCap: over TLS a client
// opens upload streams on one HTTP/2 connection and never sends their
// bodies. The origin advertises its cap, refuses the stream past it, and
// keeps answering the connection's open streams and other clients.
func TestOneHTTP2ConnectionCannotHoldMoreThanItsStreamCap(t *testing.T) {
	ca := testpki.NewCA(t, "shoal test CA")
	cert, key := ca.Issue(t, "shoal test origin", 2, x509.ExtKeyUsageServerAuth)
	dir := t.TempDir()
	certPath, keyPath := testpki.WriteFile(t, dir, "cert.pem", cert), testpki.WriteFile(t, dir, "key.pem", key)
	clientTLS := &tls.Config{RootCAs: ca.Pool()}
	addr, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p, err := testenv.Start(t.Context(), testenv.Options{
		Name:    "origin (TLS) " + addr,
		Path:    testenv.Binary(t, "origin"),
		Args:    []string{"--listen", addr, "--storage", "file://" + filepath.Join(dir, "storage"), "--tls-cert", certPath, "--tls-key", keyPath},
		LogPath: filepath.Join(dir, "origin.log"),
		Ready:   testenv.HTTPSReady("https://"+addr+"/readyz", clientTLS),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(testenv.DefaultStopTimeout); err != nil {
			t.Errorf("stopping the origin: %v", err)
		}
	})

	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().NegotiatedProtocol; got != "h2" {
		t.Fatalf("the origin negotiated %q over TLS, want h2", got)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// The server's SETTINGS come first; acknowledging them makes the cap
	// binding (before that a server may only refuse softly).
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	advertised := -1
	for advertised < 0 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the origin's SETTINGS: %v", err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			continue
		}
		if v, ok := sf.Value(http2.SettingMaxConcurrentStreams); ok {
			advertised = int(v)
		} else {
			t.Fatal("the origin's SETTINGS name no SETTINGS_MAX_CONCURRENT_STREAMS: an unbounded number of streams per connection")
		}
		if err := fr.WriteSettingsAck(); err != nil {
			t.Fatal(err)
		}
	}
	if advertised != h2StreamCap {
		t.Fatalf("the origin advertises %d streams per connection, want the documented %d", advertised, h2StreamCap)
	}

	// Start an upload session per stream: POST with a Content-Length and
	// no body, so each handler waits on its body.
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	open := func(id uint32) {
		t.Helper()
		hbuf.Reset()
		for _, f := range [][2]string{
			{":method", http.MethodPost}, {":scheme", "https"}, {":authority", addr},
			{":path", "/v2/attack/app/blobs/uploads/?digest=sha256:" + string(bytes.Repeat([]byte("0"), 64))},
			{"content-type", "application/octet-stream"}, {"content-length", strconv.Itoa(1 << 20)},
		} {
			if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
				t.Fatal(err)
			}
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
			t.Fatalf("opening stream %d: %v", id, err)
		}
	}
	for i := range h2StreamCap {
		open(uint32(2*i + 1))
	}
	over := uint32(2*h2StreamCap + 1)
	open(over)

	// The stream past the cap is reset; no stream within it is.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("stream %d, past the cap of %d, was never refused", over, h2StreamCap)
			}
			t.Fatalf("reading frames: %v (the origin closed the whole connection instead of refusing one stream?)", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok {
			if rst.StreamID != over {
				t.Fatalf("stream %d, within the cap, was reset (%v)", rst.StreamID, rst.ErrCode)
			}
			t.Logf("stream %d past the cap: reset with %v", over, rst.ErrCode)
			break
		}
	}

	// Another client is served meanwhile.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: true}, Timeout: 30 * time.Second}
	resp, err := hc.Get("https://" + addr + "/v2/")
	if err != nil {
		t.Fatalf("an honest client, while one connection holds its %d streams: %v", h2StreamCap, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Errorf("an honest client got %s over HTTP/%d, want 200 over HTTP/2", resp.Status, resp.ProtoMajor)
	}
}
