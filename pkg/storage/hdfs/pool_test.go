package hdfs

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// partition stands between a driver and a real namenode. cut closes every
// namenode connection it let through and refuses new ones until heal: to
// the client this is what a namenode restart looks like, but the test
// chooses when each step happens.
type partition struct {
	mu    sync.Mutex
	down  bool
	conns []*partitionConn
}

type partitionConn struct {
	net.Conn
	cut atomic.Bool
	// noticed is set once the client failed to write on the connection
	// after the cut. The library then keeps the client in its 5 s backoff,
	// refusing calls without dialing.
	noticed atomic.Bool
}

func (c *partitionConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil && c.cut.Load() {
		c.noticed.Store(true)
	}
	return n, err
}

func (p *partition) wrap(dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.down {
			return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		pc := &partitionConn{Conn: c}
		p.conns = append(p.conns, pc)
		return pc, nil
	}
}

// cut closes the open connections and refuses new ones. It returns the
// connections it closed.
func (p *partition) cut() []*partitionConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	closed := p.conns
	p.conns = nil
	for _, c := range closed {
		c.cut.Store(true)
		_ = c.Conn.Close()
	}
	return closed
}

func (p *partition) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// TestPooledClientsRecoverWithTheNamenode cuts a driver off from the
// namenode and waits until every pooled client has noticed (their lease
// renewers write to the namenode every second). While cut off, calls fail
// with storage.ErrUnavailable; once the namenode is reachable again, every
// client of the pool must serve on its first call. The library alone would
// refuse calls for 5 s after it noticed the failure, so without the pool
// replacing those clients the first call on each of them fails.
func TestPooledClientsRecoverWithTheNamenode(t *testing.T) {
	const clients = 3
	cfg, err := ParseURL(freshRoot(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Clients = clients
	part := &partition{}
	d, err := newWithDial(context.Background(), cfg, part.wrap)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	if err := d.PutContent(ctx, "/f", []byte("content")); err != nil {
		t.Fatal(err)
	}
	// Connect every client of the pool.
	for i := 0; i < clients; i++ {
		if _, err := d.Stat(ctx, "/f"); err != nil {
			t.Fatal(err)
		}
	}

	conns := part.cut()
	if len(conns) < clients {
		t.Fatalf("%d namenode connections open for %d clients", len(conns), clients)
	}
	eventually.True(t, "every client to fail a write to the namenode after the cut", func() bool {
		for _, c := range conns {
			if !c.noticed.Load() {
				return false
			}
		}
		return true
	})

	_, err = d.Stat(ctx, "/f")
	switch {
	case err == nil:
		t.Fatal("Stat cut off from the namenode succeeded")
	case !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "HDFS"):
		t.Fatalf("Stat cut off from the namenode: %v; want an error matching storage.ErrUnavailable and naming HDFS", err)
	}

	part.heal()
	for i := 0; i < clients; i++ {
		fi, err := d.Stat(ctx, "/f")
		if err != nil {
			t.Fatalf("Stat %d of %d (one per pooled client) once the namenode is reachable again: %v", i+1, clients, err)
		}
		if fi.Size() != int64(len("content")) {
			t.Fatalf("Stat after the cut: size %d, want %d", fi.Size(), len("content"))
		}
	}
}
