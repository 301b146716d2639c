package tracker

import (
	"context"
	// Registers SHA-512 so that sha512 blob digests validate.
	_ "crypto/sha512"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// Limits on announce fields, so that one client cannot grow an entry (and
// the memory of every answer that includes it) without bound.
const (
	maxPeerIDLen   = 128
	maxLocalityLen = 128
	maxAddrLen     = 300
)

// Options carries the Server's collaborators. Every field may be left zero.
type Options struct {
	// Registerer receives the tracker's metrics; nil means a private
	// registry (metrics are kept but not exported).
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now; tests move it to expire entries.
	Now func() time.Time
	// Rand supplies each table shard's random source, for reproducible
	// hand-out order in tests.
	Rand func() *rand.Rand
	// RequireIdentity makes announces answer to the cluster certificate of
	// the connection they come on (auth.PeerFromContext): set it when the
	// gRPC listener requires and verifies client certificates (mTLS). An
	// announce is then refused unless its peer_id is the certificate's
	// peer id, is_origin comes with an origin certificate, and its address
	// is the connection's source address or one the certificate names.
	// Without it, announces are taken at their word: for trusted networks
	// only.
	RequireIdentity bool
}

// Server is the shoal.tracker.v1.Tracker gRPC service. Register it with
// trackerpb.RegisterTrackerServer and run Sweep in the background.
type Server struct {
	trackerpb.UnimplementedTrackerServer

	cfg     Config
	policy  Policy
	table   *Table
	metrics *metrics
	log     *slog.Logger
	now     func() time.Time
	// requireIdentity is Options.RequireIdentity.
	requireIdentity bool
}

// NewServer returns a tracker with an empty table.
func NewServer(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	t := NewTable(cfg.Shards, cfg.limits(), opts.Rand)
	m, err := newMetrics(opts.Registerer, t)
	if err != nil {
		return nil, fmt.Errorf("registering tracker metrics: %w", err)
	}
	return &Server{
		cfg: cfg,
		policy: Policy{
			MinOrigins:     cfg.MinOrigins,
			IPv4PrefixBits: cfg.IPv4PrefixBits,
			IPv6PrefixBits: cfg.IPv6PrefixBits,
		},
		table:           t,
		metrics:         m,
		log:             opts.Logger,
		now:             opts.Now,
		requireIdentity: opts.RequireIdentity,
	}, nil
}

// Table returns the server's peer table, for debugging endpoints and tests.
func (s *Server) Table() *Table { return s.table }

// Sweep removes expired entries every SweepInterval until ctx is done.
func (s *Server) Sweep(ctx context.Context) {
	tick := time.NewTicker(s.cfg.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if n := s.table.Sweep(s.now()); n > 0 {
				s.log.Debug("swept expired tracker entries", "removed", n, "remaining", s.table.Len())
			}
		}
	}
}

// Announce implements shoal.tracker.v1.Tracker/Announce.
func (s *Server) Announce(ctx context.Context, req *trackerpb.AnnounceRequest) (*trackerpb.AnnounceResponse, error) {
	start := time.Now()
	event := eventIndex(req.GetEvent())
	p, err := peerFromRequest(ctx, req)
	if err != nil {
		s.metrics.count(event, resultInvalid).Inc()
		s.log.Debug("rejected announce", "peer_id", req.GetPeerId(), "digest", req.GetDigest(), "err", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if s.requireIdentity {
		if err := authorize(ctx, p); err != nil {
			s.metrics.count(event, resultDenied).Inc()
			s.log.Warn("refused announce", "peer_id", p.ID, "addr", p.Addr, "is_origin", p.Origin, "err", err)
			return nil, err
		}
	}
	// The response and its interval in one allocation.
	a := &answer{interval: durationpb.Duration{
		Seconds: int64(s.cfg.AnnounceInterval / time.Second),
		Nanos:   int32(s.cfg.AnnounceInterval % time.Second),
	}}
	a.resp.Interval = &a.interval
	if req.GetEvent() == trackerpb.Event_EVENT_STOPPED {
		s.table.Remove(req.GetDigest(), p.ID)
	} else {
		pol := s.policy
		pol.Limit = s.cfg.DefaultPeers
		if n := int(req.GetNumWant()); n > 0 {
			pol.Limit = min(n, s.cfg.MaxPeers)
		}
		var infos []trackerpb.PeerInfo
		shed, refused := s.table.announce(req.GetDigest(), p, s.cfg.PeerTTL, s.now(), pol, func(i, n int, id string, e *entry) {
			if i == 0 {
				// Two allocations for the whole list rather than one per
				// peer.
				infos = make([]trackerpb.PeerInfo, n)
				a.resp.Peers = make([]*trackerpb.PeerInfo, n)
			}
			pi := &infos[i]
			pi.PeerId = id
			pi.Addr = e.addr
			pi.Complete = e.complete
			pi.IsOrigin = e.origin
			pi.PieceCount = e.pieces
			a.resp.Peers[i] = pi
		})
		if shed != NotShed {
			s.metrics.shed[shed].Inc()
			s.log.Debug("table limit reached: entry not recorded", "limit", shed.String(), "peer_id", p.ID, "digest", req.GetDigest(), "refused", refused)
		}
		if refused {
			s.metrics.count(event, resultExhausted).Inc()
			return nil, status.Errorf(codes.ResourceExhausted,
				"tracker table full (%s limit): blob %s is not tracked here, try the next tracker", shed, req.GetDigest())
		}
	}
	s.metrics.count(event, resultOK).Inc()
	s.metrics.duration.Observe(time.Since(start).Seconds())
	return &a.resp, nil
}

// answer is an AnnounceResponse with room for its interval.
type answer struct {
	resp     trackerpb.AnnounceResponse
	interval durationpb.Duration
}

// Event labels of shoal_tracker_announces_total, by eventIndex.
const (
	eventNone = iota
	eventStarted
	eventCompleted
	eventStopped
	numEvents
)

var eventLabels = [numEvents]string{
	eventNone:      "none",
	eventStarted:   "started",
	eventCompleted: "completed",
	eventStopped:   "stopped",
}

func eventIndex(e trackerpb.Event) int {
	switch e {
	case trackerpb.Event_EVENT_STARTED:
		return eventStarted
	case trackerpb.Event_EVENT_COMPLETED:
		return eventCompleted
	case trackerpb.Event_EVENT_STOPPED:
		return eventStopped
	default:
		// Periodic re-announces, and event numbers from a newer client.
		return eventNone
	}
}

// peerFromRequest validates an announce and turns it into a table entry.
// The peer's IP, used for locality, is the one in addr when addr names an
// IP, else the address the announce came from.
func peerFromRequest(ctx context.Context, req *trackerpb.AnnounceRequest) (Peer, error) {
	if !isSHA256Digest(req.GetDigest()) {
		if _, err := digest.Parse(req.GetDigest()); err != nil {
			return Peer{}, fmt.Errorf("invalid digest %q: %w", req.GetDigest(), err)
		}
	}
	id := req.GetPeerId()
	if id == "" || len(id) > maxPeerIDLen {
		return Peer{}, fmt.Errorf("peer_id must be 1 to %d bytes, got %d", maxPeerIDLen, len(id))
	}
	if len(req.GetLocality()) > maxLocalityLen {
		return Peer{}, fmt.Errorf("locality must be at most %d bytes, got %d", maxLocalityLen, len(req.GetLocality()))
	}
	if len(req.GetAddr()) > maxAddrLen {
		return Peer{}, fmt.Errorf("addr must be at most %d bytes, got %d", maxAddrLen, len(req.GetAddr()))
	}
	host, port, err := net.SplitHostPort(req.GetAddr())
	if err != nil {
		return Peer{}, fmt.Errorf("addr %q is not host:port: %w", req.GetAddr(), err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return Peer{}, fmt.Errorf("addr %q has an invalid port", req.GetAddr())
	}

	// The address the announce came from, only when needed: turning the
	// connection's address into a netip.Addr costs a string per announce.
	remote := func() netip.Addr { return sourceAddr(ctx) }
	addr := req.GetAddr()
	ip, err := netip.ParseAddr(host)
	switch {
	case host == "" || err == nil && ip.IsUnspecified():
		ip = remote()
		if !ip.IsValid() {
			return Peer{}, fmt.Errorf("addr %q has no host and the announce's source address is unknown", req.GetAddr())
		}
		host = ip.String()
		addr = net.JoinHostPort(host, port)
	case err != nil:
		// A host name: keep it for peers to dial, judge locality by the
		// address the announce came from.
		ip = remote()
		addr = net.JoinHostPort(host, port)
	case !isHostPort(addr, host, port):
		// Normalized, e.g. "[1.2.3.4]:80" to "1.2.3.4:80".
		addr = net.JoinHostPort(host, port)
	}

	p := Peer{
		ID:       id,
		Addr:     addr,
		IP:       ip.Unmap(),
		Locality: req.GetLocality(),
		Complete: req.GetComplete(),
		Origin:   req.GetIsOrigin(),
	}
	if !p.Complete {
		p.Pieces = metainfo.CountBits(req.GetBitfield())
	}
	return p, nil
}

// sourceAddr returns the address a call came from, or the zero Addr.
func sourceAddr(ctx context.Context) netip.Addr {
	if pr, ok := grpcpeer.FromContext(ctx); ok && pr.Addr != nil {
		if ap, err := netip.ParseAddrPort(pr.Addr.String()); err == nil {
			return ap.Addr().Unmap()
		}
	}
	return netip.Addr{}
}

// authorize checks an announce, turned into p, against the verified
// cluster certificate of the connection it came on, and returns the gRPC
// status error that refuses it. The table is keyed by peer id, so requiring
// the certificate's id is what lets a peer change or remove only its own
// entries. The id must be the certificate's rather than being replaced by
// it: a peer that announces one id and handshakes with another would be
// two peers to the swarm, and a refusal says at once what is misconfigured.
func authorize(ctx context.Context, p Peer) error {
	id, err := auth.AuthenticatePeer(ctx)
	if err != nil {
		return status.Errorf(codes.Unauthenticated,
			"this tracker takes announces only from cluster certificates (a shoal://<role>/<peer-id> URI, see docs/certificates.md): %v", err)
	}
	switch {
	case id.Role == auth.RoleTracker:
		return status.Errorf(codes.PermissionDenied, "%s is a tracker certificate: only origins and agents announce", id)
	case p.ID != id.ID:
		return status.Errorf(codes.PermissionDenied, "peer_id %q is not the peer id of this connection's certificate %s: announce as %q", p.ID, id, id.ID)
	case p.Origin && id.Role != auth.RoleOrigin:
		return status.Errorf(codes.PermissionDenied, "is_origin needs an origin certificate, and %s is an %s certificate", id, id.Role)
	}
	host, _, err := net.SplitHostPort(p.Addr)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "addr %q is not host:port: %v", p.Addr, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip = ip.Unmap(); ip != sourceAddr(ctx) && !id.HasIP(ip) {
			return status.Errorf(codes.PermissionDenied,
				"addr %s: %s is neither the address this announce came from (%s) nor an IP address of certificate %s", p.Addr, ip, sourceAddr(ctx), id)
		}
	} else if !id.HasDNSName(host) {
		return status.Errorf(codes.PermissionDenied, "addr %s: %s is not a DNS name of certificate %s", p.Addr, host, id)
	}
	return nil
}

// isHostPort reports whether addr is exactly net.JoinHostPort(host, port),
// so that the common announce keeps its addr string instead of building an
// equal one.
func isHostPort(addr, host, port string) bool {
	if strings.IndexByte(host, ':') >= 0 {
		return len(addr) == len(host)+len(port)+3 && addr[0] == '[' && addr[1:1+len(host)] == host &&
			addr[1+len(host):3+len(host)] == "]:" && addr[3+len(host):] == port
	}
	return len(addr) == len(host)+len(port)+1 && addr[:len(host)] == host && addr[len(host)] == ':' && addr[len(host)+1:] == port
}

// isSHA256Digest reports whether d is a valid sha256 digest, the common
// case, without digest.Parse's regular expression. Other digests go through
// digest.Parse.
func isSHA256Digest(d string) bool {
	const prefix = "sha256:"
	if len(d) != len(prefix)+64 || d[:len(prefix)] != prefix || !sha256Available {
		return false
	}
	for i := len(prefix); i < len(d); i++ {
		if c := d[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

var sha256Available = digest.SHA256.Available()
