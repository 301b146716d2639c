package tracker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/rendezvous"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// ClientConfig configures an agent's (or seeder's) view of the trackers.
type ClientConfig struct {
	// Trackers are the trackers' gRPC addresses (host:port). Every agent
	// must list the same set for rendezvous hashing to agree.
	Trackers []string `yaml:"trackers"`
	// Timeout bounds one announce to one tracker. Short, because a slow
	// tracker only delays finding peers and the next one is tried: 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Cooldown is how long a tracker that failed is tried after the others,
	// so that every announce does not first wait on a dead tracker: 30s.
	Cooldown time.Duration `yaml:"cooldown"`
	// DialOptions are passed to grpc.NewClient, e.g. mTLS credentials.
	// Without any, connections are plaintext (development only: docs/design.md
	// wants mTLS between all Shoal components).
	DialOptions []grpc.DialOption `yaml:"-"`
}

// DefaultClientConfig returns the timeouts above with no trackers.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{Timeout: 2 * time.Second, Cooldown: 30 * time.Second}
}

// Client announces to one of several trackers, chosen per blob by Rank, and
// moves to the next on failure. It is safe for concurrent use.
type Client struct {
	cfg ClientConfig
	now func() time.Time

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	down  map[string]time.Time // tracker -> end of its cooldown
}

// NewClient returns a client; connections are opened lazily on first use.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.Trackers) == 0 {
		return nil, errors.New("tracker client: no trackers configured")
	}
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("tracker client: timeout must be positive, got %s", cfg.Timeout)
	}
	return &Client{cfg: cfg, now: time.Now, conns: map[string]*grpc.ClientConn{}, down: map[string]time.Time{}}, nil
}

// Order returns the trackers in the order an announce for digest tries
// them: rendezvous rank, with trackers in cooldown moved to the end (still
// tried, last, since they may have recovered).
func (c *Client) Order(digest string) []string {
	ranked := rendezvous.Rank(digest, c.cfg.Trackers)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	up := make([]string, 0, len(ranked))
	var cooling []string
	for _, t := range ranked {
		if until, ok := c.down[t]; ok && now.Before(until) {
			cooling = append(cooling, t)
		} else {
			up = append(up, t)
		}
	}
	return append(up, cooling...)
}

// Announce sends req to the trackers in Order until one answers. A tracker
// that rejects the request as invalid, or refuses it to this peer's
// certificate (PERMISSION_DENIED), is not retried elsewhere: the others
// would answer the same. A tracker whose table is full (RESOURCE_EXHAUSTED)
// is up: the next one is tried, without the cooldown of a failed tracker.
// When every tracker fails, the error joins each failure; the caller
// carries on with the origin alone.
func (c *Client) Announce(ctx context.Context, req *trackerpb.AnnounceRequest) (*trackerpb.AnnounceResponse, error) {
	var errs []error
	for _, t := range c.Order(req.GetDigest()) {
		resp, err := c.announce(ctx, t, req)
		if err == nil {
			c.mu.Lock()
			delete(c.down, t)
			c.mu.Unlock()
			return resp, nil
		}
		switch status.Code(err) {
		case codes.InvalidArgument, codes.PermissionDenied:
			return nil, fmt.Errorf("announcing %s to tracker %s: %w", req.GetDigest(), t, err)
		case codes.ResourceExhausted:
			errs = append(errs, fmt.Errorf("tracker %s: %w", t, err))
			continue
		}
		errs = append(errs, fmt.Errorf("tracker %s: %w", t, err))
		if ctx.Err() != nil {
			break
		}
		c.mu.Lock()
		c.down[t] = c.now().Add(c.cfg.Cooldown)
		c.mu.Unlock()
	}
	return nil, fmt.Errorf("announcing %s: every tracker failed: %w", req.GetDigest(), errors.Join(errs...))
}

func (c *Client) announce(ctx context.Context, tracker string, req *trackerpb.AnnounceRequest) (*trackerpb.AnnounceResponse, error) {
	conn, err := c.conn(tracker)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	return trackerpb.NewTrackerClient(conn).Announce(ctx, req)
}

func (c *Client) conn(tracker string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[tracker]; ok {
		return conn, nil
	}
	// grpc.NewClient does not dial; it fails only on a malformed target.
	opts := c.cfg.DialOptions
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(tracker, opts...)
	if err != nil {
		return nil, fmt.Errorf("creating connection to tracker %s: %w", tracker, err)
	}
	c.conns[tracker] = conn
	return conn, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for t, conn := range c.conns {
		if err := conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing connection to tracker %s: %w", t, err))
		}
		delete(c.conns, t)
	}
	return errors.Join(errs...)
}
