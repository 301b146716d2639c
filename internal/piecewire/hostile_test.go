package piecewire

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// fakeServer is the server end of one connection, driven by the test: a
// peer that can send anything.
type fakeServer struct {
	l  net.Listener
	nc net.Conn
	br *bufio.Reader
}

func newFakeServer(t *testing.T) *fakeServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &fakeServer{l: l}
}

// dial connects a client to the fake server and reads its preface.
func (fs *fakeServer) dial(t *testing.T, m *metainfo.Metainfo, cfg ClientConfig) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), fs.l.Addr().String(), nil, m, "capability", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	nc, err := fs.l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fs.nc, fs.br = nc, bufio.NewReader(nc)
	var pre [len(Preface)]byte
	if _, err := io.ReadFull(fs.br, pre[:]); err != nil || pre != Preface {
		t.Fatalf("preface %q, %v; want %q", pre[:], err, Preface[:])
	}
	return c
}

func (fs *fakeServer) expectFrame(t *testing.T, typ FrameType) Frame {
	t.Helper()
	f, err := ReadFrame(fs.br)
	if err != nil || f.Type != typ {
		t.Fatalf("frame %+v, %v; want a %s", f, err, typ)
	}
	return f
}

func (fs *fakeServer) send(t *testing.T, f Frame) {
	t.Helper()
	b, err := AppendFrame(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	fs.write(t, b)
}

func (fs *fakeServer) write(t *testing.T, b []byte) {
	t.Helper()
	if _, err := fs.nc.Write(b); err != nil {
		t.Fatal(err)
	}
}

// requested returns a client of a fake server that has requested pieces
// 0 and 1 of b.
func requested(t *testing.T, b *blob, cfg ClientConfig) (*fakeServer, *Conn) {
	fs := newFakeServer(t)
	c := fs.dial(t, b.meta, cfg)
	for i := range 2 {
		if err := c.Request(i); err != nil {
			t.Fatal(err)
		}
		if f := fs.expectFrame(t, FrameRequest); f.Index != uint32(i) || f.Digest != b.meta.Digest.String() || f.Capability != "capability" {
			t.Fatalf("request frame %+v; want piece %d of %s with the capability", f, i, b.meta.Digest)
		}
	}
	return fs, c
}

// expectDropped waits for c to end and checks that it ended with an error
// wrapping want and saying what went wrong, and that no piece was
// delivered from the bad answer onwards.
func expectDropped(t *testing.T, c *Conn, want error, says string) {
	t.Helper()
	err := waitDone(t, c)
	if !errors.Is(err, want) || !strings.Contains(err.Error(), says) {
		t.Fatalf("connection ended with %v; want an error wrapping %q that says %q", err, want, says)
	}
	for r := range c.Results() {
		if r.Data != nil {
			t.Fatalf("piece %d delivered from a peer that broke the protocol", r.Index)
		}
	}
}

func TestClientDropsAPieceLongerThanAnnounced(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	t.Run("announced longer than the piece", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0)) + 1})
		fs.write(t, b.piece(0))
		expectDropped(t, c, ErrProtocol, "announced with 262145 bytes, it has 262144")
	})
	t.Run("more bytes than announced", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0))})
		fs.write(t, b.piece(0))
		// Bytes past the announced length are read as the next frame.
		fs.write(t, b.piece(1)[:100])
		err := waitDone(t, c)
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("connection ended with %v; want a protocol violation", err)
		}
		// Piece 0 itself was whole and verified before the extra bytes.
		if r, ok := <-c.Results(); ok && r.Index == 0 && !bytes.Equal(r.Data, b.piece(0)) {
			t.Fatalf("piece 0 delivered wrong")
		}
		for r := range c.Results() {
			if r.Index == 1 && r.Data != nil {
				t.Fatalf("piece 1 delivered from trailing bytes")
			}
		}
	})
	t.Run("control frame over its limit", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		var hdr [headerSize]byte
		hdr[0] = byte(FrameError)
		binary.BigEndian.PutUint32(hdr[1:], 1<<30)
		fs.write(t, hdr[:])
		expectDropped(t, c, ErrProtocol, "error frame announces 1073741824 payload bytes, at most 1025 allowed")
	})
}

func TestClientDropsATruncatedFrame(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	t.Run("inside a piece", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0))})
		fs.write(t, b.piece(0)[:1000])
		fs.nc.Close()
		expectDropped(t, c, ErrTruncated, "reading piece 0 at 0 of 262144 bytes")
	})
	t.Run("inside a header", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		b, _ := AppendFrame(nil, Frame{Type: FrameReject, Index: 0, Reason: ReasonBusy})
		fs.write(t, b[:3])
		fs.nc.Close()
		expectDropped(t, c, ErrTruncated, "after 3 of 5 header bytes")
	})
	t.Run("server closes with requests unanswered", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		fs.nc.Close()
		expectDropped(t, c, ErrClosedByServer, "closed the connection with 2 requests unanswered")
	})
	// A cut frame is not a close between answers: the caller drops the
	// peer rather than asking it again another way.
	for _, why := range []string{"inside a piece", "inside a header"} {
		t.Run(why+" is not closed by the server", func(t *testing.T) {
			fs, c := requested(t, b, ClientConfig{})
			if why == "inside a piece" {
				fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0))})
			} else {
				fs.write(t, []byte{byte(FrameReject), 0})
			}
			fs.nc.Close()
			if err := waitDone(t, c); errors.Is(err, ErrClosedByServer) {
				t.Fatalf("connection cut %s ended with %v; want it not taken for a close between answers", why, err)
			}
		})
	}
}

func TestClientDropsAPieceNeverRequested(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	fs, c := requested(t, b, ClientConfig{})
	fs.send(t, Frame{Type: FramePiece, Index: 3, Length: uint32(b.meta.PieceSize(3))})
	fs.write(t, b.piece(3))
	expectDropped(t, c, ErrProtocol, "piece frame for piece 3, which was never requested")

	t.Run("answered twice", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		fs.send(t, Frame{Type: FrameReject, Index: 0, Reason: ReasonBusy})
		fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0))})
		fs.write(t, b.piece(0))
		expectDropped(t, c, ErrProtocol, "never requested (or was answered already)")
	})
	t.Run("a client's frame", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{})
		fs.send(t, Frame{Type: FrameCancel, Index: 0})
		expectDropped(t, c, ErrProtocol, "a cancel frame from a server")
	})
}

func TestClientDropsAMuteServer(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	t.Run("silent", func(t *testing.T) {
		_, c := requested(t, b, ClientConfig{Timeout: 100 * time.Millisecond})
		expectDropped(t, c, ErrTimeout, "nothing for 100ms")
	})
	t.Run("stops inside a piece", func(t *testing.T) {
		fs, c := requested(t, b, ClientConfig{Timeout: 100 * time.Millisecond})
		fs.send(t, Frame{Type: FramePiece, Index: 0, Length: uint32(b.meta.PieceSize(0))})
		fs.write(t, b.piece(0)[:5000])
		expectDropped(t, c, ErrTimeout, "reading piece 0")
	})
}

// rawClient is a client driven by the test, against a real Server.
type rawClient struct {
	nc net.Conn
	br *bufio.Reader
}

func rawDial(t *testing.T, addr string) *rawClient {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{nc: nc, br: bufio.NewReader(nc)}
}

func (rc *rawClient) write(t *testing.T, b []byte) {
	t.Helper()
	if _, err := rc.nc.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (rc *rawClient) request(t *testing.T, b *blob, tok string, i int) {
	t.Helper()
	f, err := AppendFrame(nil, Frame{Type: FrameRequest, Index: uint32(i), Digest: b.meta.Digest.String(), Capability: tok})
	if err != nil {
		t.Fatal(err)
	}
	rc.write(t, f)
}

// expectError reads frames until the server's Error frame.
func (rc *rawClient) expectError(t *testing.T, code Code, says string) {
	t.Helper()
	for {
		f, err := ReadFrame(rc.br)
		if err != nil {
			t.Fatalf("reading the server's answer: %v; want an Error frame %s", err, code)
		}
		if f.Type == FramePiece {
			t.Fatalf("piece %d sent to a client that broke the protocol", f.Index)
		}
		if f.Type == FrameError {
			if f.Code != code || !strings.Contains(f.Message, says) {
				t.Fatalf("error frame %s %q; want %s saying %q", f.Code, f.Message, code, says)
			}
			return
		}
	}
}

func TestServerDropsABrokenClient(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	k := newKeys(t)
	tok := k.capability(t, b.meta.Digest)
	hdr := func(typ FrameType, n uint32) []byte {
		h := []byte{byte(typ), 0, 0, 0, 0}
		binary.BigEndian.PutUint32(h[1:], n)
		return h
	}
	for _, tc := range []struct {
		name string
		send func(t *testing.T, rc *rawClient)
		code Code // 0: no Error frame (the connection is just closed)
		want error
		says string
	}{
		{"wrong preface", func(t *testing.T, rc *rawClient) { rc.write(t, []byte("GET / HTTP/1.1\r\n")) },
			CodeInvalid, ErrProtocol, "preface"},
		{"request longer than allowed", func(t *testing.T, rc *rawClient) {
			rc.write(t, Preface[:])
			rc.write(t, hdr(FrameRequest, maxRequest+1))
		}, 0, ErrProtocol, "at most 4358 allowed"},
		{"cancel of the wrong length", func(t *testing.T, rc *rawClient) {
			rc.write(t, Preface[:])
			rc.write(t, append(hdr(FrameCancel, 8), make([]byte, 8)...))
		}, 0, ErrProtocol, "cancel frame announces 8 payload bytes, it has 4"},
		{"truncated request", func(t *testing.T, rc *rawClient) {
			rc.write(t, Preface[:])
			f, _ := AppendFrame(nil, Frame{Type: FrameRequest, Index: 0, Digest: b.meta.Digest.String(), Capability: tok})
			rc.write(t, f[:len(f)-10])
			rc.nc.(*net.TCPConn).CloseWrite()
		}, 0, ErrTruncated, "payload bytes"},
		{"a server's frame", func(t *testing.T, rc *rawClient) {
			rc.write(t, Preface[:])
			f, _ := AppendFrame(nil, Frame{Type: FramePiece, Index: 0, Length: 10})
			rc.write(t, f)
		}, CodeInvalid, ErrProtocol, "a piece frame from a client"},
		{"a second blob", func(t *testing.T, rc *rawClient) {
			rc.write(t, Preface[:])
			rc.request(t, b, tok, 0)
			other := newBlob(t, 10, 256<<10)
			rc.request(t, other, k.capability(t, other.meta.Digest), 0)
		}, CodeInvalid, ErrProtocol, "one blob per connection"},
		{"a piece asked twice", func(t *testing.T, rc *rawClient) {
			// Piece 1 first holds the writer (at the gate), so piece 0 is
			// still queued when it is asked again: a piece the writer has
			// taken may be asked for again (its answer is on its way).
			rc.write(t, Preface[:])
			rc.request(t, b, tok, 1)
			rc.request(t, b, tok, 0)
			rc.request(t, b, tok, 0)
		}, CodeInvalid, ErrProtocol, "piece 0 requested again before its answer"},
		{"bad digest", func(t *testing.T, rc *rawClient) {
			rc.write(t, Preface[:])
			f, _ := AppendFrame(nil, Frame{Type: FrameRequest, Digest: "sha256:nope", Capability: tok})
			rc.write(t, f)
		}, CodeInvalid, ErrProtocol, `request digest "sha256:nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFileSource(t, newBlob(t, 1<<20, 256<<10))
			src.gate = make(chan struct{}) // nothing is sent before the violation is seen
			ts := startServer(t, ServerConfig{}, src, k.v, nil)
			rc := rawDial(t, ts.addr)
			tc.send(t, rc)
			if tc.code != 0 {
				rc.expectError(t, tc.code, tc.says)
			}
			err := ts.connEnd(t)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("server connection ended with %v; want an error wrapping %q saying %q", err, tc.want, tc.says)
			}
		})
	}
}

func TestServerDropsAClientThatStopsReading(t *testing.T) {
	// More than the socket buffers of loopback hold, so the writes stall.
	b := newBlob(t, 64<<20, 4<<20)
	k := newKeys(t)
	src := newFileSource(t, b)
	ts := startServer(t, ServerConfig{MaxQueued: 16, Timeout: 200 * time.Millisecond}, src, k.v, nil)
	rc := rawDial(t, ts.addr)
	rc.write(t, Preface[:])
	tok := k.capability(t, b.meta.Digest)
	for i := range b.meta.NumPieces() {
		rc.request(t, b, tok, i)
	}
	err := ts.connEnd(t)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "the peer stopped reading") {
		t.Fatalf("server connection ended with %v; want a write deadline, saying the peer stopped reading", err)
	}
	if got := src.done.Load(); got == 0 {
		t.Fatal("Piece.Done was not called for the piece cut off")
	}
}

func TestServerClosesAnIdleConnection(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	k := newKeys(t)
	ts := startServer(t, ServerConfig{IdleTimeout: 100 * time.Millisecond}, newFileSource(t, b), k.v, nil)
	c := ts.dial(t, nil, b, k, ClientConfig{})
	if err := c.Request(0); err != nil {
		t.Fatal(err)
	}
	if r, ok := nextResult(t, c); !ok || r.Data == nil {
		t.Fatalf("piece 0: %+v, %v", r, c.Err())
	}
	if err := ts.connEnd(t); !errors.Is(err, ErrIdle) {
		t.Fatalf("server connection ended with %v; want ErrIdle", err)
	}
	if err := waitDone(t, c); err == nil || !strings.Contains(err.Error(), "closed the connection with 0 requests unanswered") {
		t.Fatalf("client ended with %v; want the server's close", err)
	}
}

// TestRequestMeetingAnIdleCloseIsClosedByTheServer: a server closes a
// connection idle for IdleTimeout, and a request the client sends just then
// goes unread. The client's end says the server closed the connection
// between answers (ErrClosedByServer), so that its caller asks for the
// piece another way instead of taking the peer for a broken one.
func TestRequestMeetingAnIdleCloseIsClosedByTheServer(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	k := newKeys(t)
	srv := NewServer(ServerConfig{IdleTimeout: time.Millisecond, Logger: quietLogger()}, newFileSource(t, b), k.v)
	conns := make(chan *Conn, 1)
	requested := make(chan error, 1)
	// The request goes out once the server has found the connection idle
	// and before it closes it.
	srv.idled = func() { requested <- (<-conns).Request(0) }
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			ended <- err
			return
		}
		ended <- srv.ServeConn(nc)
	}()
	t.Cleanup(func() { l.Close(); srv.Close() })
	c, err := Dial(context.Background(), l.Addr().String(), nil, b.meta, k.capability(t, b.meta.Digest), ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	conns <- c

	if err := <-requested; err != nil {
		t.Fatalf("requesting piece 0 as the server finds the connection idle: %v", err)
	}
	if err := <-ended; !errors.Is(err, ErrIdle) {
		t.Fatalf("server connection ended with %v; want ErrIdle", err)
	}
	expectDropped(t, c, ErrClosedByServer, "closed the connection with 1 requests unanswered")
}

// TestRequestWrittenAfterTheServerClosedIsClosedByTheServer: a request
// whose write fails because the server closed the connection does not end
// it with the write's error: the reader finds the close between answers,
// and that is the connection's end (ErrClosedByServer), the request still
// outstanding.
func TestRequestWrittenAfterTheServerClosedIsClosedByTheServer(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	fs := newFakeServer(t)
	raw, err := net.Dial("tcp", fs.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// The client reads nothing until the request's write has failed.
	nc := &brokenPipeConn{Conn: raw, readable: make(chan struct{})}
	c, err := NewConn(nc, b.meta, "capability", ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sc, err := fs.l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	sc.Close()

	nc.broken.Store(true)
	if err := c.Request(0); !errors.Is(err, ErrClosedByServer) {
		t.Fatalf("requesting piece 0 from a server that closed the connection: %v; want ErrClosedByServer", err)
	}
	close(nc.readable)
	expectDropped(t, c, ErrClosedByServer, "closed the connection with 1 requests unanswered")
}

// brokenPipeConn is a connection whose writes fail as on a socket the
// other end reset (EPIPE) once broken, and whose reads wait for readable.
type brokenPipeConn struct {
	net.Conn
	broken   atomic.Bool
	readable chan struct{}
}

func (c *brokenPipeConn) Write(b []byte) (int, error) {
	if c.broken.Load() {
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}
	}
	return c.Conn.Write(b)
}

func (c *brokenPipeConn) Read(b []byte) (int, error) {
	<-c.readable
	return c.Conn.Read(b)
}

func TestServerAnswersQueuedRequestsAfterTheClientCloses(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	k := newKeys(t)
	ts := startServer(t, ServerConfig{}, newFileSource(t, b), k.v, nil)
	rc := rawDial(t, ts.addr)
	rc.write(t, Preface[:])
	tok := k.capability(t, b.meta.Digest)
	for i := range 4 {
		rc.request(t, b, tok, i)
	}
	rc.nc.(*net.TCPConn).CloseWrite()
	for i := range 4 {
		f, err := ReadFrame(rc.br)
		if err != nil || f.Type != FramePiece || f.Index != uint32(i) {
			t.Fatalf("answer %d: %+v, %v; want piece %d", i, f, err, i)
		}
		if _, err := rc.br.Discard(int(f.Length)); err != nil {
			t.Fatal(err)
		}
	}
	if err := ts.connEnd(t); err != nil {
		t.Fatalf("server connection ended with %v; want a clean end", err)
	}
}

func TestServerRefusesConnectionsBeyondItsLimit(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	k := newKeys(t)
	ts := startServer(t, ServerConfig{MaxConns: 1}, newFileSource(t, b), k.v, nil)
	first := ts.dial(t, nil, b, k, ClientConfig{})
	if err := first.Request(0); err != nil {
		t.Fatal(err)
	}
	if r, ok := nextResult(t, first); !ok || r.Data == nil {
		t.Fatalf("first connection: %v, %v", r, first.Err())
	}
	second := ts.dial(t, nil, b, k, ClientConfig{})
	if err := ts.connEnd(t); err == nil || !strings.Contains(err.Error(), "at the limit of 1 connections") {
		t.Fatalf("second connection ended with %v; want refused at the limit", err)
	}
	var re *RemoteError
	if err := waitDone(t, second); !errors.As(err, &re) || re.Code != CodeUnavailable {
		t.Fatalf("second client ended with %v; want an Error frame, unavailable", err)
	}
	if err := first.Request(1); err != nil {
		t.Fatal(err)
	}
	if r, ok := nextResult(t, first); !ok || r.Data == nil {
		t.Fatalf("the first connection after the refusal: %v, %v", r, first.Err())
	}
}

func TestServerRefusesConnectionsBeyondItsLimitPerBlob(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	other := newBlob(t, 1<<20+1, 256<<10)
	k := newKeys(t)
	ts := startServer(t, ServerConfig{MaxConnsPerBlob: 1}, multiSource{newFileSource(t, b), newFileSource(t, other)}, k.v, nil)
	first := ts.fetchPiece(t, "the first connection for the blob", b, k, 0)
	second := ts.dial(t, nil, b, k, ClientConfig{})
	if err := second.Request(0); err != nil {
		t.Fatal(err)
	}
	if err := ts.connEnd(t); err == nil || !strings.Contains(err.Error(), "at the limit of 1 connections for "+b.meta.Digest.String()) {
		t.Fatalf("second connection for the blob ended with %v; want refused at the blob's limit", err)
	}
	var re *RemoteError
	if err := waitDone(t, second); !errors.As(err, &re) || re.Code != CodeUnavailable {
		t.Fatalf("second client ended with %v; want an Error frame, unavailable", err)
	}
	ts.fetchPiece(t, "a connection for another blob, which has its own count", other, k, 0)
	first.Close()
	if err := ts.connEnd(t); err != nil {
		t.Fatalf("the first connection ended with %v; want a clean close", err)
	}
	ts.fetchPiece(t, "a connection for the blob once the first ended", b, k, 1)
}

// fetchPiece dials ts for b and fails the test unless piece i comes; the
// connection stays open.
func (ts *testServer) fetchPiece(t *testing.T, what string, b *blob, k keys, i int) *Conn {
	t.Helper()
	c := ts.dial(t, nil, b, k, ClientConfig{})
	if err := c.Request(i); err != nil {
		t.Fatal(err)
	}
	if r, ok := nextResult(t, c); !ok || r.Data == nil {
		t.Fatalf("%s: %v, %v; want piece %d", what, r, c.Err(), i)
	}
	return c
}

// TestServerTakesARequestAgainOnceItsAnswerIsOut: a client may ask for a
// piece again as soon as it has the answer (the agent does at once after
// a cancelled reject), which can reach it before the server's write has
// returned. The server must take that request, not refuse the client for
// asking twice.
func TestServerTakesARequestAgainOnceItsAnswerIsOut(t *testing.T) {
	b := newBlob(t, 1<<20, 256<<10)
	k := newKeys(t)
	again := make(chan struct{}, 2)
	ts := startServer(t, ServerConfig{}, newFileSource(t, b), k.v, nil, func(f Frame) {
		if f.Type == FrameRequest && f.Index == 0 {
			again <- struct{}{}
		}
	})
	release := make(chan struct{})
	var once sync.Once
	ts.written = func(i uint32) {
		// Hold the writer after the first answer until the client's
		// second request for the same piece was acted on.
		once.Do(func() {
			select {
			case <-release:
			case <-time.After(30 * time.Second): // the server refused it: no second request comes
			}
		})
	}
	rc := rawDial(t, ts.addr)
	_ = rc.nc.SetReadDeadline(time.Now().Add(time.Minute))
	rc.write(t, Preface[:])
	tok := k.capability(t, b.meta.Digest)
	go func() {
		<-again // the first request
		<-again // the second, sent after the first answer arrived
		close(release)
	}()
	rc.request(t, b, tok, 0)
	for n := range 2 {
		f, err := ReadFrame(rc.br)
		if err != nil || f.Type != FramePiece || f.Index != 0 {
			t.Fatalf("answer %d: %+v, %v; want piece 0 (the server refused a request made after its answer?)", n+1, f, err)
		}
		if _, err := rc.br.Discard(int(f.Length)); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			rc.request(t, b, tok, 0)
		}
	}
}

// With UnsentLimit, a piece counts as sent (Piece.Sent) only once TCP has
// sent it, or all but the last UnsentLimit bytes: not when it fits in the
// socket's send buffer. A sender that took written for sent would see no
// backlog on a slow link and take on more sends than the link carries.
// Here the client reads nothing and offers a tiny receive window, so
// almost nothing leaves the server's socket; a send buffer of megabytes
// would still have taken several write rounds.
func TestPieceBytesCountAsSentOnlyOnceOnTheWire(t *testing.T) {
	b := newBlob(t, 32<<20, 32<<20)
	k := newKeys(t)
	src := newFileSource(t, b)
	ts := startServer(t, ServerConfig{UnsentLimit: 128 << 10}, src, k.v, nil)
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rc := &rawClient{nc: nc, br: bufio.NewReader(nc)}
	rc.write(t, Preface[:])
	rc.request(t, b, k.capability(t, b.meta.Digest), 0)
	eventually.True(t, "the server to open the piece", func() bool { return src.opens(0) == 1 })
	// Let the writes go as far as the sockets take them.
	var last int64 = -1
	for stable := 0; stable < 5; {
		time.Sleep(100 * time.Millisecond)
		n := src.sentBytes.Load()
		if n == last {
			stable++
		} else {
			stable, last = 0, n
		}
	}
	t.Logf("told sent: %d bytes", last)
	if last >= writeStep {
		t.Fatalf("Piece.Sent told of %d bytes to a client that read none; want less than one write round (%d): the bytes sit in the server's send buffer", last, writeStep)
	}
}
