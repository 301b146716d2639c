// Package seeder makes an origin node a seeder in the P2P swarm: it serves
// the shoal.peer.v1.Peer gRPC service (GetMetainfo, Exchange) for blobs in
// the origin's storage.
//
// Each blob has R owners among the origin nodes (pkg/cluster, rendezvous
// hashing). An owner computes the blob's piece metainfo once and stores it,
// keeps a local disk copy of the blob (read from storage once, concurrent
// requests coalesced) and announces itself to the trackers as an origin
// holding every piece. Any node answers: a node that does not own a blob
// loads its stored metainfo (or asks an owner to compute it) and serves its
// pieces straight from storage, so a client that reaches any origin node
// always gets the blob. Owners are where the swarm is sent, through the
// trackers and the owner list returned with GetMetainfo.
package seeder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/internal/uplink"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/cluster"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/proto/peerpb"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// chunkSize is the PieceChunk payload the seeder sends: as large as the
// protocol allows, for the fewest messages per piece.
const chunkSize = peerwire.MaxChunk

// maxPeerID is the tracker's limit on peer ids.
const maxPeerID = 128

// proxiedHeader marks a GetMetainfo that one origin node sends to another
// (an owner); its value is the sender's peer id.
const proxiedHeader = "shoal-origin-proxied"

// askOwnerTimeout bounds asking an owner for metainfo. Long enough for the
// owner to read and hash a large blob; an owner that is down fails at once
// (connection refused) and this node computes the metainfo itself.
const askOwnerTimeout = 60 * time.Second

// Membership is the cluster view the seeder needs; *cluster.Cluster
// implements it.
type Membership interface {
	Self() cluster.Member
	Owners(digest string, r int) []cluster.Member
}

// Announcer sends tracker announces; *tracker.Client implements it.
type Announcer interface {
	Announce(ctx context.Context, req *trackerpb.AnnounceRequest) (*trackerpb.AnnounceResponse, error)
}

// Options are the seeder's collaborators. All but Key may be nil.
type Options struct {
	// Key is the origin cluster's signing key: it signs the metainfo
	// served and checks the capabilities presented (issued by the
	// origin's registry API with the same key), and mints the capabilities
	// this node presents to other nodes. Required.
	Key *auth.Key
	// Keys are further public keys whose capabilities are accepted: the
	// previous key during a rotation. Optional.
	Keys       []auth.PublicKey
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Members is the origin cluster. Nil: this node is alone and owns
	// every blob.
	Members Membership
	// Announcer reaches the trackers. Nil: owned blobs are not announced.
	Announcer Announcer
	// Dial opens connections to other origin nodes (to ask an owner for
	// metainfo); it carries the cluster's TLS credentials. Nil: plaintext.
	Dial []grpc.DialOption
	// Advertise is the address announced to trackers (host:port). Empty:
	// cfg.Advertise, else cfg.Listen.
	Advertise string
}

// Server implements peerpb.PeerServer for one origin node.
type Server struct {
	peerpb.UnimplementedPeerServer

	cfg       Config
	driver    storage.Driver
	log       *slog.Logger
	m         *metrics
	members   Membership
	announcer Announcer
	advertise string
	peerID    string
	dialOpts  []grpc.DialOption
	key       *auth.Key
	verifier  *auth.Verifier

	// requireIdentity: agents are known by their verified certificates
	// (mTLS), see streamPeer.
	requireIdentity bool

	cache   *cache
	meta    *lru.Cache[digest.Digest, *metainfo.Metainfo]
	wokenMu sync.Mutex // woken's check-then-add
	woken   *lru.Cache[digest.Digest, time.Time]
	flight  singleflight.Group
	uploads chan struct{} // semaphore: one token per piece being sent
	chunks  sync.Pool     // *[]byte of chunkSize
	streams chan struct{} // semaphore: one token per handshaken Exchange
	// connStreams caps each connection's Exchange streams, handshaken or not.
	connStreams *connLimit
	// coldLimits rate-limits each client's GetMetainfo calls that would
	// read a blob from storage; nil: coldMetainfoRate is off.
	coldLimits *clientLimits
	resolving  inFlight      // blobs whose metainfo is being resolved
	limiter    *rate.Limiter // nil: egress unlimited
	ledger     *ledger       // nil: superseeding off
	pieces     *pieceService // nil: the piece data path is off
	up         uplink.Meter  // piece bytes accepted and not sent, and the send rate
	// anonStreams numbers streams whose handshake names no peer, so that
	// each counts as its own agent in the ledger.
	anonStreams atomic.Int64
	// carriers numbers streams and piece connections: each is a
	// recipient of its own in the ledger (recipient.via).
	carriers atomic.Uint64
	// streamHosts names the agent of a piece connection without a
	// certificate, by the streams open from its host.
	streamHosts streamHosts
	ctx         context.Context
	cancel      context.CancelFunc
	tasks       sync.WaitGroup
	annMu       sync.Mutex
	announce    map[digest.Digest]*announceState
	connMu      sync.Mutex
	conns       map[string]*grpc.ClientConn

	closeOnce sync.Once
	closeErr  error
}

// New opens the cache in cfg.CacheDir and returns a seeder for the blobs in
// d. Close releases it.
func New(cfg Config, d storage.Driver, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Key == nil {
		return nil, errors.New("seeder: no signing key: the seeder signs the metainfo it serves and checks capabilities with the origin cluster's key")
	}
	self, err := identity(cfg.TLS)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := newMetrics(opts.Registerer)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := newCache(ctx, cfg.CacheDir, cfg.CacheBytes, m, log)
	if err != nil {
		cancel()
		return nil, err
	}
	meta, err := lru.New[digest.Digest, *metainfo.Metainfo](cfg.MetainfoEntries)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("seeder: metainfo cache: %w", err)
	}
	woken, err := lru.New[digest.Digest, time.Time](cfg.MetainfoEntries)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("seeder: owner wake-up cache: %w", err)
	}
	s := &Server{
		cfg: cfg, driver: d, log: log, m: m, members: opts.Members, announcer: opts.Announcer,
		dialOpts: opts.Dial, cache: c, meta: meta, woken: woken,
		key: opts.Key, verifier: auth.NewVerifier(append([]auth.PublicKey{opts.Key.Public()}, opts.Keys...)...),
		uploads: make(chan struct{}, cfg.MaxUploads), streams: make(chan struct{}, cfg.MaxStreams),
		connStreams: newConnLimit(cfg.MaxStreamsPerConn),
		ctx:         ctx, cancel: cancel, announce: map[digest.Digest]*announceState{}, conns: map[string]*grpc.ClientConn{},
	}
	if cfg.ColdMetainfoRate > 0 {
		if s.coldLimits, err = newClientLimits(cfg.ColdMetainfoRate, cfg.ColdMetainfoBurst); err != nil {
			cancel()
			return nil, err
		}
	}
	s.ledger = newLedger(cfg.SuperseedWindow, cfg.SuperseedMaxWindow, s.up.Rate, s.grantFreed)
	s.chunks.New = func() any {
		b := make([]byte, chunkSize)
		return &b
	}
	s.advertise = firstNonEmpty(opts.Advertise, cfg.Advertise, cfg.Listen)
	// The tracker keys entries by peer id: the address keeps two nodes
	// that share a name (separate clusters on one host) apart.
	s.peerID = "origin@" + s.advertise
	if s.members != nil {
		s.peerID = "origin-" + s.members.Self().Name + "@" + s.advertise
	}
	if len(s.peerID) > maxPeerID {
		s.peerID = s.peerID[:maxPeerID]
	}
	if self.ID != "" {
		// With mTLS, trackers and agents know this node by its certificate.
		s.peerID, s.requireIdentity = self.ID, true
	}
	if cfg.EgressBytesPerSecond > 0 {
		// The burst is one chunk: WaitN cannot take more than the burst,
		// and a larger one would let a stream send ahead of the rate.
		s.limiter = rate.NewLimiter(rate.Limit(cfg.EgressBytesPerSecond), chunkSize)
	}
	if s.pieces, err = s.startPieces(); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// Close stops announcing (telling the trackers, best effort), waits for
// background reads into the cache to stop, and closes the cache and the
// connections to other nodes. Stop the gRPC server first. Later calls
// return the first one's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Server) close() error {
	s.pieces.close()
	// Under annMu so that no announce loop starts after tasks.Wait.
	s.annMu.Lock()
	s.cancel()
	s.annMu.Unlock()
	s.tasks.Wait()
	s.cache.close()
	s.connMu.Lock()
	defer s.connMu.Unlock()
	var errs []error
	for addr, conn := range s.conns {
		if err := conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing connection to origin %s: %w", addr, err))
		}
		delete(s.conns, addr)
	}
	return errors.Join(errs...)
}

// blobDataPath is where registry:2 (and so the origin) keeps a blob.
func blobDataPath(d digest.Digest) string {
	h := d.Encoded()
	return path.Join("/docker/registry/v2/blobs", string(d.Algorithm()), h[:2], h, "data")
}

// owners returns the blob's owners, best first; nil without a cluster.
func (s *Server) owners(d digest.Digest) []cluster.Member {
	if s.members == nil {
		return nil
	}
	return s.members.Owners(d.String(), s.cfg.Replicas)
}

// owns reports whether this node is among the blob's owners.
func (s *Server) owns(d digest.Digest) bool {
	if s.members == nil {
		return true
	}
	self := s.members.Self().Name
	for _, o := range s.owners(d) {
		if o.Name == self {
			return true
		}
	}
	return false
}

func parseDigest(v string) (digest.Digest, error) {
	d, err := digest.Parse(v)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "digest %q: %v", v, err)
	}
	return d, nil
}

// GetMetainfo returns the blob's metainfo, signed, to a caller presenting
// a capability for the blob (PERMISSION_DENIED otherwise), within the
// caller's coldMetainfoRate when answering would read the blob from storage
// (RESOURCE_EXHAUSTED with a RetryInfo otherwise); NOT_FOUND when
// the blob is not in storage. The response header peerwire.OwnersHeader lists the
// owners' addresses.
func (s *Server) GetMetainfo(ctx context.Context, req *peerpb.GetMetainfoRequest) (*peerpb.Metainfo, error) {
	d, err := parseDigest(req.GetDigest())
	if err != nil {
		s.m.metainfoRequests.WithLabelValues("invalid").Inc()
		return nil, err
	}
	if err := s.checkCapability(ctx, d, "get_metainfo"); err != nil {
		s.m.metainfoRequests.WithLabelValues("denied").Inc()
		return nil, err
	}
	release, err := s.limitColdMetainfo(ctx, d)
	if err != nil {
		return nil, err
	}
	defer release()
	// A request another node sent on to this one is never sent on again:
	// two nodes whose views of the cluster briefly differ could otherwise
	// each wait on the other.
	md, _ := metadata.FromIncomingContext(ctx)
	proxied := len(md.Get(proxiedHeader)) > 0
	m, err := s.metainfo(ctx, d, !proxied)
	if err != nil {
		st := toStatus(err)
		switch st.Code() {
		case codes.NotFound:
			s.m.metainfoRequests.WithLabelValues("not_found").Inc()
		default:
			s.m.metainfoRequests.WithLabelValues("error").Inc()
			s.log.Warn("seeder: GetMetainfo failed", "digest", d, "err", err)
		}
		return nil, st.Err()
	}
	s.m.metainfoRequests.WithLabelValues("ok").Inc()
	if owners := s.owners(d); len(owners) > 0 {
		addrs := make([]string, 0, len(owners))
		for _, o := range owners {
			if o.Addr != "" {
				addrs = append(addrs, o.Addr)
			}
		}
		if len(addrs) > 0 {
			_ = grpc.SetHeader(ctx, metadata.Pairs(peerwire.OwnersHeader, strings.Join(addrs, ",")))
		}
	}
	if s.owns(d) {
		// The agent asks for metainfo first, then for pieces: read the blob
		// into the cache now and tell the trackers this node seeds it.
		s.prefetch(d, m.Size)
		s.track(d)
	} else if !proxied {
		s.wakeOwners(d)
	}
	return m.Proto(), nil
}

// errBlobUnknown is returned (wrapped) for a blob that is not in storage.
var errBlobUnknown = errors.New("blob unknown")

func toStatus(err error) *status.Status {
	if st, ok := status.FromError(err); ok {
		return st
	}
	switch {
	case errors.Is(err, errBlobUnknown):
		return status.New(codes.NotFound, err.Error())
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, err.Error())
	}
	return status.New(codes.Internal, err.Error())
}

// blobSize stats the blob in storage.
func (s *Server) blobSize(ctx context.Context, d digest.Digest) (int64, error) {
	fi, err := s.driver.Stat(ctx, blobDataPath(d))
	if err != nil {
		var nf storage.PathNotFoundError
		if errors.As(err, &nf) {
			return 0, fmt.Errorf("%s: %w", d, errBlobUnknown)
		}
		return 0, fmt.Errorf("looking up blob %s: %w", d, err)
	}
	if fi.IsDir() {
		return 0, fmt.Errorf("%s: %w", d, errBlobUnknown)
	}
	return fi.Size(), nil
}

// metainfo returns the blob's metainfo, loading it from storage, asking an
// owner, or computing and storing it. Concurrent calls for one blob share
// one resolution; a caller that gives up does not cancel it for the others.
func (s *Server) metainfo(ctx context.Context, d digest.Digest, mayAskOwner bool) (*metainfo.Metainfo, error) {
	if m, ok := s.meta.Get(d); ok {
		// The blob may have been deleted since (GC); a cached copy is proof
		// enough while this node holds it, storage is asked otherwise.
		if s.cache.has(d) {
			return m, nil
		}
		if _, err := s.blobSize(ctx, d); err != nil {
			return nil, err
		}
		return m, nil
	}
	// Requests that may not ask an owner resolve apart, so that they never
	// wait on a resolution that is asking one.
	key := "metainfo:" + d.String()
	if !mayAskOwner {
		key = "metainfo-here:" + d.String()
	}
	ch := s.flight.DoChan(key, func() (any, error) {
		s.resolving.add(d)
		defer s.resolving.done(d)
		return s.resolveMetainfo(context.WithoutCancel(ctx), d, mayAskOwner)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*metainfo.Metainfo), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *Server) resolveMetainfo(ctx context.Context, d digest.Digest, mayAskOwner bool) (*metainfo.Metainfo, error) {
	size, err := s.blobSize(ctx, d)
	if err != nil {
		return nil, err
	}
	m, err := metainfo.Load(ctx, s.driver, d)
	switch {
	case err == nil && m.Size == size:
		return s.remember(d, m)
	case err == nil:
		s.log.Warn("seeder: stored metainfo does not match the blob's size; computing it again", "digest", d, "stored", m.Size, "blob", size)
	case !isNotFound(err):
		return nil, err
	}
	if mayAskOwner && !s.owns(d) {
		if m, err := s.metainfoFromOwner(ctx, d, size); err == nil {
			return s.remember(d, m)
		}
	}
	m, err = s.compute(ctx, d, size)
	if err != nil {
		return nil, err
	}
	if err := metainfo.Store(ctx, s.driver, m); err != nil {
		// The metainfo is still right; the next node computes it again.
		s.log.Warn("seeder: storing metainfo failed", "digest", d, "err", err)
	}
	s.m.metainfoComputed.Inc()
	return s.remember(d, m)
}

func isNotFound(err error) bool {
	var nf storage.PathNotFoundError
	return errors.As(err, &nf)
}

// compute hashes the blob's pieces. On an owner it reads the blob through
// the cache, so the one storage read also fills the local copy.
func (s *Server) compute(ctx context.Context, d digest.Digest, size int64) (*metainfo.Metainfo, error) {
	pl := metainfo.PieceLengthFor(size)
	if s.owns(d) {
		e, err := s.cache.open(d, size, s.storageOpener(d))
		if err == nil {
			defer s.cache.release(e)
			return metainfo.Compute(e.reader(ctx, 0, size), d, size, pl)
		}
		if !errors.Is(err, errNoRoom) {
			return nil, err
		}
	}
	rc, err := s.openStorage(ctx, d, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return metainfo.Compute(rc, d, size, pl)
}

// metainfoFromOwner asks the blob's owners, in order, for its metainfo, so
// that it is computed (and the blob cached) where it will be seeded.
func (s *Server) metainfoFromOwner(ctx context.Context, d digest.Digest, size int64) (*metainfo.Metainfo, error) {
	var errs []error
	self := s.members.Self().Name
	for _, o := range s.owners(d) {
		if o.Name == self || o.Addr == "" {
			continue
		}
		m, err := s.askOwner(ctx, o.Addr, d)
		if err == nil && m.Size != size {
			err = fmt.Errorf("owner %s describes %d bytes, storage has %d", o.Name, m.Size, size)
		}
		if err == nil {
			s.m.metainfoProxied.WithLabelValues("ok").Inc()
			// The owner now caches and announces the blob: no need to wake it.
			s.wokenMu.Lock()
			s.woken.Add(d, time.Now())
			s.wokenMu.Unlock()
			return m, nil
		}
		s.m.metainfoProxied.WithLabelValues("error").Inc()
		s.log.Info("seeder: asking owner for metainfo failed; trying the next or computing it here", "digest", d, "owner", o.Name, "err", err)
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		// No other owner has a seeder address (yet): nothing was asked.
		return nil, errors.New("no other owner to ask")
	}
	return nil, errors.Join(errs...)
}

func (s *Server) askOwner(ctx context.Context, addr string, d digest.Digest) (*metainfo.Metainfo, error) {
	conn, err := s.conn(addr)
	if err != nil {
		return nil, err
	}
	// Computing a large blob's metainfo takes a while on the owner, but an
	// owner that does not answer at all should not hold this node up for
	// long: it then computes the metainfo itself.
	ctx, cancel := context.WithTimeout(ctx, askOwnerTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, proxiedHeader, s.peerID)
	if ctx, err = s.withOwnCapability(ctx, d); err != nil {
		return nil, err
	}
	p, err := peerpb.NewPeerClient(conn).GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: d.String()})
	if err != nil {
		return nil, err
	}
	m, err := metainfo.FromProto(p)
	if err != nil {
		return nil, err
	}
	if m.Digest != d {
		return nil, fmt.Errorf("owner answered for %s", m.Digest)
	}
	return m, nil
}

func (s *Server) conn(addr string) (*grpc.ClientConn, error) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	opts := s.dialOpts
	if len(opts) == 0 {
		opt, err := DialOption(TLSConfig{})
		if err != nil {
			return nil, err
		}
		opts = []grpc.DialOption{opt}
	}
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to origin %s: %w", addr, err)
	}
	s.conns[addr] = c
	return c, nil
}

// storageOpener returns how the cache reads d from storage.
func (s *Server) storageOpener(d digest.Digest) func(ctx context.Context) (io.ReadCloser, error) {
	return func(ctx context.Context) (io.ReadCloser, error) { return s.driver.Reader(ctx, blobDataPath(d), 0) }
}

// openStorage reads d from storage at off, counting the bytes.
func (s *Server) openStorage(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error) {
	rc, err := s.driver.Reader(ctx, blobDataPath(d), off)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%s: %w", d, errBlobUnknown)
		}
		return nil, fmt.Errorf("reading blob %s from storage: %w", d, err)
	}
	return &countingReader{rc: rc, c: s.m.storageReadBytes}, nil
}

type countingReader struct {
	rc io.ReadCloser
	c  prometheus.Counter
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.c.Add(float64(n))
	return n, err
}

func (r *countingReader) Close() error { return r.rc.Close() }

// wakeOwners tells the owners of a blob that a non-owner was asked for,
// by asking them for its metainfo in the background, at most once per
// announce interval per blob: they then cache and announce it, and the
// swarm's origin traffic goes to them rather than to whichever node an
// agent reached first.
func (s *Server) wakeOwners(d digest.Digest) {
	now := time.Now()
	s.wokenMu.Lock()
	if last, ok := s.woken.Get(d); ok && now.Sub(last) < s.cfg.AnnounceInterval {
		s.wokenMu.Unlock()
		return
	}
	s.woken.Add(d, now)
	s.wokenMu.Unlock()
	s.annMu.Lock()
	defer s.annMu.Unlock()
	if s.ctx.Err() != nil {
		return
	}
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		self := s.members.Self().Name
		for _, o := range s.owners(d) {
			if o.Name == self || o.Addr == "" {
				continue
			}
			if _, err := s.askOwner(s.ctx, o.Addr, d); err != nil {
				s.log.Debug("seeder: waking owner failed", "digest", d, "owner", o.Name, "err", err)
			}
		}
	}()
}

// prefetch starts reading an owned blob into the cache, if it is not there.
func (s *Server) prefetch(d digest.Digest, size int64) {
	e, err := s.cache.open(d, size, s.storageOpener(d))
	if err != nil {
		if !errors.Is(err, errNoRoom) {
			s.log.Warn("seeder: caching blob failed", "digest", d, "err", err)
		}
		return
	}
	// The fill goes on without a reader pinning it.
	s.cache.release(e)
}

// FillHost replaces an empty or unspecified host in addr (":7002",
// "0.0.0.0:7002") with ip, giving an address other hosts can dial.
func FillHost(addr string, ip net.IP) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || ip == nil {
		return addr
	}
	if h := net.ParseIP(host); host == "" || (h != nil && h.IsUnspecified()) {
		return net.JoinHostPort(ip.String(), port)
	}
	return addr
}
