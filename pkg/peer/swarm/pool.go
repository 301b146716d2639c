package swarm

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// idleClose is how long a connection to a peer is kept after its last
// stream ends, so the layers of one image reuse it.
const idleClose = 30 * time.Second

// clientPool shares one gRPC connection per peer address between the
// streams of every blob.
type clientPool struct {
	opts []grpc.DialOption

	mu      sync.Mutex
	clients map[string]*pooledClient
	closed  bool
}

type pooledClient struct {
	cc    *grpc.ClientConn
	refs  int
	timer *time.Timer
}

func newClientPool(opts []grpc.DialOption) *clientPool {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &clientPool{opts: opts, clients: make(map[string]*pooledClient)}
}

// get returns a connection to addr and a function to release it.
func (p *clientPool) get(addr string) (*grpc.ClientConn, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, fmt.Errorf("connecting to %s: client pool closed", addr)
	}
	pc, ok := p.clients[addr]
	if !ok {
		// NewClient does not dial: the first stream does, bounded by its
		// context.
		cc, err := grpc.NewClient(addr, p.opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("connecting to %s: %w", addr, err)
		}
		pc = &pooledClient{cc: cc}
		p.clients[addr] = pc
	}
	if pc.timer != nil {
		pc.timer.Stop()
		pc.timer = nil
	}
	pc.refs++
	var once sync.Once
	return pc.cc, func() { once.Do(func() { p.release(addr, pc) }) }, nil
}

func (p *clientPool) release(addr string, pc *pooledClient) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc.refs--
	if pc.refs > 0 || p.closed {
		return
	}
	pc.timer = time.AfterFunc(idleClose, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if pc.refs == 0 && p.clients[addr] == pc {
			delete(p.clients, addr)
			_ = pc.cc.Close()
		}
	})
}

// drop closes the connection to addr at once if no stream uses it: after
// a failed dial, so that gRPC stops reconnecting in the background.
func (p *clientPool) drop(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc, ok := p.clients[addr]; ok && pc.refs == 0 {
		if pc.timer != nil {
			pc.timer.Stop()
		}
		delete(p.clients, addr)
		_ = pc.cc.Close()
	}
}

func (p *clientPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, pc := range p.clients {
		if pc.timer != nil {
			pc.timer.Stop()
		}
		_ = pc.cc.Close()
		delete(p.clients, addr)
	}
}
