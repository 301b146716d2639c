package seeder

import (
	"context"
	"sync"

	"google.golang.org/grpc/peer"
)

// connOf names the connection a call came on: its remote address, which
// is unique per open TCP connection. Calls without one (in-process
// transports) share the empty name.
func connOf(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// connLimit counts the open streams of each connection against a cap, so
// that one connection cannot hold an unbounded number of streams (each a
// goroutine and buffers) whether or not they ever send a handshake. The
// map holds only connections with a stream open.
type connLimit struct {
	max int

	mu   sync.Mutex
	open map[string]int
}

func newConnLimit(max int) *connLimit {
	return &connLimit{max: max, open: map[string]int{}}
}

// take counts one more stream on conn; false (nothing counted) at the cap.
func (l *connLimit) take(conn string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[conn] >= l.max {
		return false
	}
	l.open[conn]++
	return true
}

// release uncounts a stream taken on conn.
func (l *connLimit) release(conn string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[conn] <= 1 {
		delete(l.open, conn)
		return
	}
	l.open[conn]--
}
