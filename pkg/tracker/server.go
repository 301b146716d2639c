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
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

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
	t := NewTable(cfg.Shards, opts.Rand)
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
		table:   t,
		metrics: m,
		log:     opts.Logger,
		now:     opts.Now,
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
	event := eventLabel(req.GetEvent())
	p, err := peerFromRequest(ctx, req)
	if err != nil {
		s.metrics.announces.WithLabelValues(event, "invalid").Inc()
		s.log.Debug("rejected announce", "peer_id", req.GetPeerId(), "digest", req.GetDigest(), "err", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &trackerpb.AnnounceResponse{Interval: durationpb.New(s.cfg.AnnounceInterval)}
	if req.GetEvent() == trackerpb.Event_EVENT_STOPPED {
		s.table.Remove(req.GetDigest(), p.ID)
	} else {
		pol := s.policy
		pol.Limit = s.cfg.DefaultPeers
		if n := int(req.GetNumWant()); n > 0 {
			pol.Limit = min(n, s.cfg.MaxPeers)
		}
		peers := s.table.Announce(req.GetDigest(), p, s.cfg.PeerTTL, s.now(), pol)
		resp.Peers = make([]*trackerpb.PeerInfo, len(peers))
		for i, q := range peers {
			resp.Peers[i] = &trackerpb.PeerInfo{
				PeerId:     q.ID,
				Addr:       q.Addr,
				Complete:   q.Complete,
				IsOrigin:   q.Origin,
				PieceCount: uint32(q.Pieces),
			}
		}
	}
	s.metrics.announces.WithLabelValues(event, "ok").Inc()
	s.metrics.duration.Observe(time.Since(start).Seconds())
	return resp, nil
}

func eventLabel(e trackerpb.Event) string {
	switch e {
	case trackerpb.Event_EVENT_STARTED:
		return "started"
	case trackerpb.Event_EVENT_COMPLETED:
		return "completed"
	case trackerpb.Event_EVENT_STOPPED:
		return "stopped"
	default:
		// Periodic re-announces, and event numbers from a newer client.
		return "none"
	}
}

// peerFromRequest validates an announce and turns it into a table entry.
// The peer's IP, used for locality, is the one in addr when addr names an
// IP, else the address the announce came from.
func peerFromRequest(ctx context.Context, req *trackerpb.AnnounceRequest) (Peer, error) {
	if _, err := digest.Parse(req.GetDigest()); err != nil {
		return Peer{}, fmt.Errorf("invalid digest %q: %w", req.GetDigest(), err)
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

	var remote netip.Addr
	if pr, ok := grpcpeer.FromContext(ctx); ok && pr.Addr != nil {
		if ap, err := netip.ParseAddrPort(pr.Addr.String()); err == nil {
			remote = ap.Addr().Unmap()
		}
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case host == "" || err == nil && ip.IsUnspecified():
		if !remote.IsValid() {
			return Peer{}, fmt.Errorf("addr %q has no host and the announce's source address is unknown", req.GetAddr())
		}
		ip = remote
		host = ip.String()
	case err != nil:
		// A host name: keep it for peers to dial, judge locality by the
		// address the announce came from.
		ip = remote
	}

	p := Peer{
		ID:       id,
		Addr:     net.JoinHostPort(host, port),
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
