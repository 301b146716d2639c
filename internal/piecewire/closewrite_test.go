package piecewire

import (
	"crypto/tls"
	"errors"
	"sync/atomic"
	"testing"

	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/eventually"
)

// A client done with a connection while a piece it cancelled is still
// being written closes its side (CloseWrite) and reads the rest: the
// server ends the connection cleanly, the piece sent whole, as when it
// was idle. Closed at once, the server's write breaks, and an origin
// seeder takes that for a crashed agent (it frees every piece given over
// the connection).
func TestCloseWriteLetsThePieceBeingWrittenFinishAndTheServerEndCleanly(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"plaintext", false}, {"TLS", true}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBlob(t, 9<<20, 4<<20)
			src := newFileSource(t, b)
			k := newKeys(t)
			var srvTLS, cliTLS *tls.Config
			if tc.tls {
				srvTLS, cliTLS = tlsConfigs(t)
			}
			var cancels atomic.Int64
			// Piece 0 takes about 1.5 s after its first 1 MiB: it is
			// being written when the cancels come.
			egress := rate.NewLimiter(2<<20, 1<<20)
			ts := startServer(t, ServerConfig{Egress: egress}, src, k.v, srvTLS, func(f Frame) {
				if f.Type == FrameCancel {
					cancels.Add(1)
				}
			})
			c := ts.dial(t, cliTLS, b, k, ClientConfig{})
			defer c.Close()
			if err := c.Request(0); err != nil {
				t.Fatal(err)
			}
			if err := c.Request(1); err != nil {
				t.Fatal(err)
			}
			eventually.True(t, "piece 0 to start arriving", func() bool { _, ok := c.Arrived(0); return ok })
			// Piece 0 is being sent (its answer started), piece 1 queued.
			// (A piece cancelled while it is opened is not sent at all:
			// TestPieceCancelledWhileBeingOpenedIsNotSent.)
			for _, i := range []int{0, 1} {
				if err := c.Cancel(i); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if err := c.Request(2); !errors.Is(err, ErrClosed) {
				t.Fatalf("a request after CloseWrite: %v; want ErrClosed", err)
			}
			eventually.True(t, "the server to take both cancels", func() bool { return cancels.Load() == 2 })
			if err := ts.connEnd(t); err != nil {
				t.Fatalf("server connection ended with %v; want a clean end", err)
			}
			if err := waitDone(t, c); !errors.Is(err, ErrClosedByServer) {
				t.Fatalf("client connection ended with %v; want the server's close", err)
			}
			if n, told := src.done.Load(), src.told.Load(); n != 1 || told != 1 {
				t.Fatalf("%d pieces sent (%d whole); want piece 0 sent whole and piece 1, cancelled, not at all", n, told)
			}
		})
	}
}
