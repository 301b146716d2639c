package seeder

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shoal-dev/shoal/pkg/auth"
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

// maxRateClients bounds the per-client GetMetainfo limiters kept. A client
// evicted (the least recently seen) starts again with a full burst, which
// costs at most one burst per eviction; the map cannot grow with the
// number of addresses an attacker uses.
const maxRateClients = 4096

// clientLimits hands out one token bucket per client.
type clientLimits struct {
	rate  rate.Limit
	burst int

	mu       sync.Mutex
	limiters *lru.Cache[string, *rate.Limiter]
}

func newClientLimits(perSecond float64, burst int) (*clientLimits, error) {
	c, err := lru.New[string, *rate.Limiter](maxRateClients)
	if err != nil {
		return nil, fmt.Errorf("seeder: per-client limits: %w", err)
	}
	return &clientLimits{rate: rate.Limit(perSecond), burst: burst, limiters: c}, nil
}

// allow takes a token from client's bucket, or reports how long until one
// is there.
func (c *clientLimits) allow(client string, now time.Time) (bool, time.Duration) {
	c.mu.Lock()
	l, ok := c.limiters.Get(client)
	if !ok {
		l = rate.NewLimiter(c.rate, c.burst)
		c.limiters.Add(client, l)
	}
	c.mu.Unlock()
	r := l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// clientOf names who a call comes from, for per-client limits: the peer
// id of its verified certificate with mTLS, else its source IP (every
// connection from one host shares a budget).
func (s *Server) clientOf(ctx context.Context) (name string, origin bool) {
	if s.requireIdentity {
		if id, err := auth.AuthenticatePeer(ctx); err == nil {
			return "peer:" + id.ID, id.Role == auth.RoleOrigin
		}
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "", false
	}
	if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
		return ap.Addr().Unmap().String(), false
	}
	return p.Addr.String(), false
}

// coldMetainfo reports whether answering GetMetainfo for d would make this
// node read the blob from storage: its metainfo is not in memory (it may
// have to be computed), or this node owns the blob and its cached copy is
// gone (it would be read into the cache again). A blob someone is pulling
// is warm: its streams pin it in the cache.
func (s *Server) coldMetainfo(d digest.Digest) bool {
	m, ok := s.meta.Peek(d)
	if !ok {
		return true
	}
	return m.Size <= s.cfg.CacheBytes && s.owns(d) && !s.cache.has(d)
}

// limitColdMetainfo refuses, with RESOURCE_EXHAUSTED and a RetryInfo, a
// cold GetMetainfo from a client past its coldMetainfoRate. Only the call
// that starts the work pays: calls for a blob whose metainfo another call
// is resolving join that work and cost nothing, so agents asking for a new
// blob together are not refused for each other. Other origin nodes
// (verified by their certificates) are not limited: they ask on behalf of
// agents that their own limits already bound. Call release when the
// GetMetainfo is answered.
func (s *Server) limitColdMetainfo(ctx context.Context, d digest.Digest) (release func(), err error) {
	if s.coldLimits == nil || !s.coldMetainfo(d) {
		return func() {}, nil
	}
	first := s.resolving.add(d)
	release = func() { s.resolving.done(d) }
	if !first {
		return release, nil
	}
	client, origin := s.clientOf(ctx)
	if origin {
		return release, nil
	}
	ok, wait := s.coldLimits.allow(client, time.Now())
	if ok {
		return release, nil
	}
	release()
	s.m.refused.WithLabelValues("metainfo_rate").Inc()
	st := status.Newf(codes.ResourceExhausted,
		"origin seeder: too many requests for metainfo of blobs nobody is pulling from %s (coldMetainfoRate); retry in %s", client, wait.Round(time.Millisecond))
	if withRetry, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = withRetry
	}
	return func() {}, st.Err()
}

// inFlight is the set of blobs whose metainfo is being resolved (or a
// GetMetainfo that may resolve it is under way), with a count for each.
type inFlight struct {
	mu sync.Mutex
	n  map[digest.Digest]int
}

// add marks d as being resolved once more and reports whether it was not
// before.
func (f *inFlight) add(d digest.Digest) (first bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[digest.Digest]int{}
	}
	f.n[d]++
	return f.n[d] == 1
}

func (f *inFlight) done(d digest.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[d] <= 1 {
		delete(f.n, d)
		return
	}
	f.n[d]--
}
