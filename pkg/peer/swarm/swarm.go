// Package swarm is the peer-agent's P2P engine: it downloads blobs piece
// by piece from other agents and origin seeders over shoal.peer.v1
// Exchange streams, and serves the pieces it holds to others.
//
// One download per blob, shared by every client streaming it, runs an
// event loop that alone owns the blob's scheduler (pkg/peer/scheduler):
// streams post what they receive, the loop feeds the scheduler and carries
// out its requests, cancels and blacklistings. Metainfo comes from an
// origin seeder only; every piece is verified against it by the piece store
// before it is stored, announced or served, so peers are never trusted with
// data. Peers come from the tracker (pkg/tracker); the configured origin
// seeders are always connected as the fallback, so a tracker outage only
// turns a pull into an origin-only pull.
//
// Connections are symmetric, as the protocol is: a stream opened by either
// side carries requests and pieces both ways, so two agents downloading at
// once trade pieces whichever dialed.
package swarm

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/internal/uplink"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/piecestore"
	"github.com/shoal-dev/shoal/pkg/peer/scheduler"
	"github.com/shoal-dev/shoal/pkg/tracker"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// chunkSize is the size of the PieceChunk frames sent: small enough that
// control messages (Have, Request) interleave with piece data without long
// waits and that the egress token bucket meters smoothly, large enough to
// keep the per-frame cost negligible.
const chunkSize = 256 << 10

// progressEvery is how often a peer delivering bytes of an unfinished
// piece (chunks on the stream, steps on the piece connection) tells the
// scheduler (scheduler.PeerProgress), which then does not time the peer's
// requests out: far below any sensible pieceTimeout.
const progressEvery = 500 * time.Millisecond

// Config tunes the engine. DefaultConfig returns working values; PeerID,
// AdvertiseAddr and Seeders are set by the agent.
type Config struct {
	// PeerID identifies this agent to trackers and peers. Default:
	// hostname and a random suffix; with mTLS the agent sets it to its
	// certificate's peer id, the only one accepted then (pkg/peer/agent).
	// A fixed one (stable per host) is
	// fine: each process also sends a random incarnation with its
	// handshakes, so a restarted agent is not held to what its
	// predecessor did (the shoal-incarnation header).
	PeerID string `yaml:"peerID"`
	// AdvertiseAddr is the host:port of this agent's peer service, as
	// announced to the tracker. An empty host (":7002") lets the tracker
	// fill in the address the announce came from.
	AdvertiseAddr string `yaml:"-"`
	// Locality is an optional label (zone, rack) sent with announces so the
	// tracker hands out nearby peers first.
	Locality string `yaml:"locality"`
	// Seeders are the gRPC addresses of origin seeders: the source of
	// metainfo and the fallback for pieces no peer delivers. Set by the
	// agent from its originSeeders, or learned from the origin later
	// (SetSeeders).
	Seeders []string `yaml:"-"`
	// OriginKeys are PEM files of the origin cluster's public keys
	// ("PUBLIC KEY" blocks, several for a rotation), which verify the
	// capabilities peers present and the metainfo seeders serve. Read by
	// the agent. Empty (the default): the agent fetches them from the
	// origin's GET /shoal/v1/keys, at start and again when it meets a key
	// id it does not hold; given, nothing is fetched (an origin that
	// cannot be asked, or keys pinned out of band).
	OriginKeys []string `yaml:"originKeys"`
	// MaxPeersPerBlob is how many agents one download takes pieces from at
	// once (origins not counted): 16.
	MaxPeersPerBlob int `yaml:"maxPeersPerBlob"`
	// MaxUploadsPerBlob is how many streams other agents may open to this
	// one for one blob; more are refused with RESOURCE_EXHAUSTED: 32.
	// With MaxPeersPerBlob it bounds the piece data path's connections for
	// one blob as well: both ends of a stream dial each other's piece port.
	MaxUploadsPerBlob int `yaml:"maxUploadsPerBlob"`
	// MaxInFlightPerPeer is how many piece requests are pipelined to one
	// peer: 4 (see scheduler.Config).
	MaxInFlightPerPeer int `yaml:"maxInFlightPerPeer"`
	// MaxQueuedUploads is how many requests from one peer are queued before
	// more are answered REASON_BUSY: 16.
	MaxQueuedUploads int `yaml:"maxQueuedUploads"`
	// UploadSlots is how many pieces this agent sends at once on the
	// piece data path, over all blobs and peers: 1. A request beyond
	// waits for a slot if this host's uplink would send it within half
	// pieceTimeout behind what it accepted, else it is answered
	// REASON_BUSY; a freed slot goes to the piece the fewest of this
	// agent's peers hold. One piece at a time goes at the link's rate,
	// so the peer that gets it can pass it on after one piece's time
	// instead of several (docs/benchmarks.md, swarm).
	UploadSlots int `yaml:"uploadSlots"`
	// DialTimeout bounds connecting to a peer and receiving its handshake
	// (the first byte): 5s. A peer that accepts connections and never
	// answers costs no more than this.
	DialTimeout time.Duration `yaml:"dialTimeout"`
	// PieceTimeout is how long a requested piece may take without its peer
	// delivering anything before it is asked elsewhere: 20s.
	PieceTimeout time.Duration `yaml:"pieceTimeout"`
	// MetainfoTimeout bounds GetMetainfo from one seeder. Generous: a
	// seeder computes the metainfo of a blob it has never seen, reading the
	// whole blob once: 2m.
	MetainfoTimeout time.Duration `yaml:"metainfoTimeout"`
	// MetainfoHedgeDelay is how long a seeder may leave GetMetainfo
	// unanswered before the next seeder in rendezvous order is asked too
	// (at most two at once; the first good answer wins): 10s. A hung
	// seeder costs this, not MetainfoTimeout; a seeder merely busy hashing
	// a large new blob costs a second computation at the next owner. 0
	// asks one seeder at a time.
	MetainfoHedgeDelay time.Duration `yaml:"metainfoHedgeDelay"`
	// StallTimeout fails a download when no piece, and no byte of one, has
	// arrived for that long (every peer and seeder unreachable or
	// failing): 2m. Clients get an error and retry; pieces already
	// verified are kept.
	StallTimeout time.Duration `yaml:"stallTimeout"`
	// DownloadAnnounceInterval is how often a running download announces to
	// the tracker to learn of agents that started after it: 5s. Seeded
	// blobs are re-announced at the interval the tracker asks for.
	DownloadAnnounceInterval time.Duration `yaml:"downloadAnnounceInterval"`
	// OriginFetchers is how many of the agents pulling a blob together
	// take pieces from the origin at once (chosen by rendezvous hashing of
	// peer id and blob, so they agree). The others defer their origin
	// requests while the swarm keeps delivering. 4: an origin seeder
	// refuses a piece it just gave another agent (superseeding), and a
	// single fetcher with one request at a time leaves the origin's link
	// mostly idle. More fetchers fill the origin's link sooner (each one's
	// origin piece shares its downlink with pieces from agents), which
	// shortens small swarms' pulls, but in a large swarm the origin then
	// sends pieces again (docs/benchmarks.md, swarm).
	OriginFetchers int `yaml:"originFetchers"`
	// OriginDeferral is how long without a new piece makes an agent that
	// is not a fetcher send its deferred origin requests (at least three
	// origin piece times, at most half PieceTimeout after the request).
	// 0 turns deferral off: every agent asks the origin at once. 1s.
	OriginDeferral time.Duration `yaml:"originDeferral"`
	// NumWant is the number of peers asked of the tracker (0: its default).
	NumWant int `yaml:"numWant"`
	// IngressLimit and EgressLimit cap the piece bytes per second this
	// host receives from and sends to peers (token buckets); 0 is
	// unlimited. Set by the agent from its own settings.
	IngressLimit int64 `yaml:"-"`
	EgressLimit  int64 `yaml:"-"`
	// VerifyBlobDigest hashes every downloaded blob whose metainfo is
	// per-piece (sha512 blobs, metainfo the origin stored before chained
	// piece hashes) against its digest, in piece order as the pieces
	// arrive, and holds back the blob's last byte from clients until the
	// hash matches: true (docs/design.md: the client gets the last byte
	// only once the blob is known to match its digest, and a mismatch ends
	// its response broken, never as a complete-looking 200). The pass
	// costs a hash of the whole blob, mostly while the download runs.
	// Chained metainfo (every sha256 blob the origin hashed since) needs
	// no pass whatever this says: its pieces, each verified as it arrives
	// from the blob's SHA-256 state after the previous one, the last
	// against the digest, are the check. For per-piece metainfo too the
	// pass is implied by the pieces: each is checked against the metainfo
	// before it is written, and the metainfo is used only if signed by
	// the origin, which computes it from the blob while checking the
	// blob's digest (metainfo.Compute). false skips it, trusting the
	// origin's signed piece hashes.
	VerifyBlobDigest bool `yaml:"verifyBlobDigest"`
	// BlacklistTTL is how long a peer caught sending a bad piece is not
	// dialed for any blob: 10m. Timeouts never put a peer here.
	BlacklistTTL time.Duration `yaml:"blacklistTTL"`
	// PieceListen is the address of the piece data path
	// (internal/piecewire, docs/p2p.md): pieces this agent holds are
	// served there as length-prefixed frames, sent with sendfile(2) from
	// the page cache on a plaintext connection, or over TLS 1.3 with the
	// agent's tls settings (mTLS with a CA), and downloads from agents
	// that name a piece port take their pieces over it, while the
	// Exchange streams carry only control messages (handshakes, Haves,
	// requests to origins). Every Exchange answer names the port
	// (response header shoal-piece-port), so nothing else needs it
	// configured; set a fixed port for firewalls. Empty (default): the
	// environment variable SHOAL_SWARM_PIECE_LISTEN if set, else
	// peerListen's host, a free port. "off": pieces go on the Exchange
	// streams only, as before the data path (to compare the two).
	PieceListen string `yaml:"pieceListen"`
}

// DefaultConfig returns the defaults described on Config.
func DefaultConfig() Config {
	return Config{
		MaxPeersPerBlob:          16,
		MaxUploadsPerBlob:        32,
		MaxInFlightPerPeer:       4,
		MaxQueuedUploads:         16,
		UploadSlots:              1,
		DialTimeout:              5 * time.Second,
		PieceTimeout:             20 * time.Second,
		MetainfoTimeout:          2 * time.Minute,
		MetainfoHedgeDelay:       10 * time.Second,
		StallTimeout:             2 * time.Minute,
		DownloadAnnounceInterval: 5 * time.Second,
		OriginFetchers:           4,
		OriginDeferral:           time.Second,
		BlacklistTTL:             10 * time.Minute,
		VerifyBlobDigest:         true,
	}
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	switch {
	case c.MaxPeersPerBlob <= 0:
		return errors.New("swarm: maxPeersPerBlob must be positive")
	case c.MaxUploadsPerBlob <= 0:
		return errors.New("swarm: maxUploadsPerBlob must be positive")
	case c.MaxInFlightPerPeer <= 0:
		return errors.New("swarm: maxInFlightPerPeer must be positive")
	case c.MaxQueuedUploads <= 0:
		return errors.New("swarm: maxQueuedUploads must be positive")
	case c.UploadSlots <= 0:
		return errors.New("swarm: uploadSlots must be positive")
	case c.DialTimeout <= 0, c.PieceTimeout <= 0, c.MetainfoTimeout <= 0, c.StallTimeout <= 0, c.DownloadAnnounceInterval <= 0:
		return errors.New("swarm: timeouts and intervals must be positive")
	case c.MetainfoHedgeDelay < 0:
		return errors.New("swarm: metainfoHedgeDelay must not be negative")
	case c.OriginDeferral < 0 || c.OriginDeferral >= c.PieceTimeout:
		return errors.New("swarm: originDeferral must be in [0, pieceTimeout)")
	case c.IngressLimit < 0 || c.EgressLimit < 0:
		return errors.New("swarm: bandwidth limits must not be negative")
	case c.PieceListen != "" && c.PieceListen != PieceListenOff && !isHostPort(c.PieceListen):
		return fmt.Errorf("swarm: pieceListen %q is neither host:port nor %q", c.PieceListen, PieceListenOff)
	}
	return nil
}

// DefaultPeerID returns hostname-<random>: stable enough to read in logs,
// unique per process so a restarted agent is a new peer.
func DefaultPeerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "agent"
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// maxIncarnation bounds the incarnation accepted from a peer.
const maxIncarnation = 64

func newIncarnation() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Options are the engine's collaborators.
type Options struct {
	// Tracker announces and finds peers; nil runs origin-only.
	Tracker *tracker.Client
	// DialOptions are used for every connection to peers and seeders
	// (mTLS credentials). Default: plaintext.
	DialOptions []grpc.DialOption
	// Keys verifies the capabilities peers present and the metainfo
	// seeders serve, with the origin's public keys. Required.
	Keys       Keys
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// RequireIdentity: peers are known by their verified cluster
	// certificates (mTLS), not by what their handshakes say (see
	// peerIdentity). Set it when DialOptions and the peer listener require
	// certificates of the cluster CA.
	RequireIdentity bool
	// ServerTLS and ClientTLS are the peer listener's and the peer
	// connections' TLS configurations (the ones behind DialOptions), nil
	// for plaintext. The piece data path serves and dials with them, at
	// TLS 1.3, so that its pieces are as private as the streams'; with
	// RequireIdentity, both ends of a piece connection must show cluster
	// certificates, as on the streams.
	ServerTLS, ClientTLS *tls.Config
	// PeerListen is the address the peer listener bound: the piece data
	// path listens on its host by default (Config.PieceListen). Empty:
	// every interface.
	PeerListen string
}

// Swarm is the engine. It serves shoal.peer.v1.Peer (Register) and opens
// blobs for the mirror (Open).
type Swarm struct {
	cfg     Config
	sched   scheduler.Config
	store   *piecestore.Store
	tracker *tracker.Client
	keys    Keys
	log     *slog.Logger
	metrics *metrics
	pool    *clientPool
	ingress *rate.Limiter
	egress  *rate.Limiter
	up      uplink.Meter
	// upNow is the clock of the piece data path's uploads in up (nil:
	// time.Now; tests set a fake one).
	upNow func() time.Time
	// upSlots are the piece data path's upload slots (cfg.UploadSlots).
	upSlots *uplink.Slots

	// ctx ends when the swarm closes; downloads and streams run under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// incarnation identifies this process among those that ran with its
	// peer id: random per start, sent with every handshake (see
	// peerwire.IncarnationHeader).
	incarnation string
	// requireIdentity is Options.RequireIdentity.
	requireIdentity bool
	// announcing bounds the seeding and stopped announces in flight, so a
	// cache of thousands of blobs does not open thousands at once.
	announcing chan struct{}
	// readerIDs numbers streaming readers for the scheduler.
	readerIDs atomic.Int64
	// seeders is Config.Seeders until SetSeeders replaces it: the agent
	// learns them from the origin while running.
	seeders atomic.Pointer[[]string]
	// pieceServer serves the piece data path on piecePort; nil when off.
	pieceServer *piecewire.Server
	piecePort   string
	// pieceTLS holds the piece data path's TLS configurations; its
	// fields are nil for plaintext.
	pieceTLS pieceTLS
	// dialPiece opens a piece connection: piecewire.Dial; tests stand
	// in a dial that hangs. pieceGrace is pieceDialGrace (tests lengthen
	// it).
	pieceGrace time.Duration
	dialPiece  func(ctx context.Context, addr string, tlsConfig *tls.Config, meta *metainfo.Metainfo, capability string, cfg piecewire.ClientConfig) (*piecewire.Conn, error)
	// pieceAnswered, if set (tests, before any conn starts), sees every
	// answer of a piece connection as pieceLoop takes it, before it acts
	// on it.
	pieceAnswered func(*conn, piecewire.Result)

	mu        sync.Mutex
	blobs     map[digest.Digest]*blobState
	blacklist map[string]time.Time // peer id -> until
	closed    bool
}

// blobState is what the swarm knows about one blob: its open streams, its
// download if one runs, and its seeding announces. Guarded by Swarm.mu.
type blobState struct {
	d        digest.Digest
	conns    map[*conn]struct{}
	incoming int
	dl       *download
	// seeding: complete and announced to the tracker until evicted.
	seeding      bool
	announced    bool // a completed announce was sent
	announcing   bool
	nextAnnounce time.Time
	// capability is the newest valid capability the origin gave for the
	// blob (grant): presented to seeders and peers.
	capability string
}

// New opens the piece store in dir (quota in bytes) and returns the
// engine. Blobs the store holds complete are seeded once Run starts.
func New(cfg Config, dir string, quota int64, opts Options) (*Swarm, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PeerID == "" {
		cfg.PeerID = DefaultPeerID()
	}
	if len(cfg.PeerID) > 128 {
		return nil, fmt.Errorf("swarm: peer id longer than 128 bytes")
	}
	if opts.Keys == nil {
		return nil, errors.New("swarm: no origin keys to verify capabilities and metainfo with")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Swarm{
		cfg:        cfg,
		tracker:    opts.Tracker,
		keys:       opts.Keys,
		log:        log,
		blobs:      make(map[digest.Digest]*blobState),
		blacklist:  make(map[string]time.Time),
		pool:       newClientPool(opts.DialOptions),
		announcing: make(chan struct{}, 16),
		upSlots:    uplink.NewSlots(func() int { return cfg.UploadSlots }),

		requireIdentity: opts.RequireIdentity,
	}
	s.incarnation = newIncarnation()
	s.SetSeeders(cfg.Seeders)
	s.sched = scheduler.DefaultConfig()
	s.sched.MaxPeers = cfg.MaxPeersPerBlob
	s.sched.MaxInFlightPerPeer = cfg.MaxInFlightPerPeer
	s.sched.PieceTimeout = cfg.PieceTimeout
	h := fnv.New64a()
	_, _ = h.Write([]byte(cfg.PeerID))
	s.sched.Seed = h.Sum64()
	// The burst is a tenth of a second's worth, and at least the largest
	// chunk the protocol allows (1 MiB), which is waited for in one go.
	if cfg.IngressLimit > 0 {
		s.ingress = rate.NewLimiter(rate.Limit(cfg.IngressLimit), max(peerwire.MaxChunk, int(cfg.IngressLimit/10)))
	}
	if cfg.EgressLimit > 0 {
		s.egress = rate.NewLimiter(rate.Limit(cfg.EgressLimit), max(peerwire.MaxChunk, int(cfg.EgressLimit/10)))
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// Downloads check the assembled blob's digest themselves as its pieces
	// arrive (digest.go), so that the check ends before a client gets the
	// last byte; the store's own pass in Complete would only repeat it.
	store, err := piecestore.Open(dir, quota, piecestore.WithLogger(log), piecestore.WithOnEvict(s.evicted), piecestore.WithoutDigestCheck())
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("swarm: %w", err)
	}
	s.store = store
	s.metrics = newMetrics(opts.Registerer, store)
	if addr := pieceListen(cfg, opts.PeerListen); addr != "" {
		s.pieceTLS = newPieceTLS(opts.ServerTLS, opts.ClientTLS, opts.RequireIdentity)
		s.dialPiece, s.pieceGrace = piecewire.Dial, pieceDialGrace
		if opts.RequireIdentity && (opts.ServerTLS == nil || opts.ClientTLS == nil) {
			// Never plaintext pieces in a cluster that requires
			// certificates on its streams.
			log.Warn("the piece data path needs Options.ServerTLS and ClientTLS with RequireIdentity: pieces stay on the Exchange streams", "pieceListen", addr)
		} else if err := s.startPieceServer(addr); err != nil {
			s.cancel()
			_ = store.Close()
			return nil, err
		}
	}
	return s, nil
}

// PeerID returns the id this agent announces.
func (s *Swarm) PeerID() string { return s.cfg.PeerID }

// SetSeeders replaces the origin seeders that metainfo is asked of and
// pieces fall back to. Downloads that start later use the new list.
func (s *Swarm) SetSeeders(addrs []string) {
	addrs = slices.Clone(addrs)
	s.seeders.Store(&addrs)
}

// Seeders returns the origin seeders in use.
func (s *Swarm) Seeders() []string { return *s.seeders.Load() }

// Store returns the piece store.
func (s *Swarm) Store() *piecestore.Store { return s.store }

// Run re-announces the complete blobs held (those reloaded from disk
// included) at the tracker's interval until ctx ends or the swarm closes.
func (s *Swarm) Run(ctx context.Context) {
	if s.tracker == nil {
		return
	}
	for _, info := range s.store.List() {
		if info.Complete {
			s.mu.Lock()
			bs := s.blobLocked(info.Digest)
			bs.seeding = true
			s.mu.Unlock()
		}
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.announceSeeded(now)
		}
	}
}

// announceSeeded announces every seeded blob whose time has come.
func (s *Swarm) announceSeeded(now time.Time) {
	type job struct {
		bs    *blobState
		event trackerpb.Event
	}
	var jobs []job
	s.mu.Lock()
	for _, bs := range s.blobs {
		if bs.seeding && !bs.announcing && !now.Before(bs.nextAnnounce) {
			bs.announcing = true
			ev := trackerpb.Event_EVENT_UNSPECIFIED
			if !bs.announced {
				ev = trackerpb.Event_EVENT_COMPLETED
			}
			jobs = append(jobs, job{bs, ev})
		}
	}
	s.mu.Unlock()
	for _, j := range jobs {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.announcing <- struct{}{}
			resp, err := s.announce(s.ctx, j.bs.d, j.event, nil)
			<-s.announcing
			next := 10 * time.Second // retry soon after a failure
			if err == nil {
				next = resp.GetInterval().AsDuration()
				if next <= 0 {
					next = 30 * time.Second
				}
			}
			s.mu.Lock()
			j.bs.announcing = false
			if err == nil {
				j.bs.announced = true
			}
			j.bs.nextAnnounce = time.Now().Add(next)
			s.mu.Unlock()
		}()
	}
}

// blobLocked returns the state of d, creating it.
func (s *Swarm) blobLocked(d digest.Digest) *blobState {
	bs, ok := s.blobs[d]
	if !ok {
		bs = &blobState{d: d, conns: make(map[*conn]struct{})}
		s.blobs[d] = bs
	}
	return bs
}

// evicted is the piece store's callback: stop seeding d, close its
// streams, and tell the tracker at once.
func (s *Swarm) evicted(d digest.Digest) {
	s.mu.Lock()
	bs, ok := s.blobs[d]
	var conns []*conn
	wasSeeding := false
	if ok {
		wasSeeding = bs.seeding
		bs.seeding = false
		for c := range bs.conns {
			conns = append(conns, c)
		}
		if bs.dl == nil {
			delete(s.blobs, d)
		}
	}
	closed := s.closed
	s.mu.Unlock()
	for _, c := range conns {
		c.close(errors.New("blob evicted from the cache"))
	}
	if wasSeeding && !closed && s.tracker != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_, _ = s.announce(s.ctx, d, trackerpb.Event_EVENT_STOPPED, nil)
		}()
	}
}

// banned reports whether a download must not dial or take back the peer
// id: it sent a corrupt piece, to this download or to any within
// BlacklistTTL. A peer the download dropped as unresponsive is not banned:
// it is dialed again at most every PieceTimeout, and taken back only as a
// new incarnation (a restarted process).
func (dl *download) banned(id string) bool {
	if r, bad := dl.sched.Blacklisted(scheduler.PeerID(id)); bad && r != scheduler.Unresponsive {
		return true
	}
	return dl.s.blacklisted(id)
}

// blacklisted reports whether a peer is on the swarm-wide blacklist: it
// sent a corrupt piece (or broke the protocol) within BlacklistTTL. Only
// that earns it; timeouts are the download's business and end with it.
func (s *Swarm) blacklisted(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.blacklist[id]
	if ok && time.Now().After(until) {
		delete(s.blacklist, id)
		return false
	}
	return ok
}

func (s *Swarm) addBlacklist(id string) {
	s.mu.Lock()
	s.blacklist[id] = time.Now().Add(s.cfg.BlacklistTTL)
	s.mu.Unlock()
}

// Close stops every download and stream, tells the tracker this agent no
// longer holds its blobs (within ctx), and closes the piece store.
func (s *Swarm) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var held []digest.Digest
	var conns []*conn
	var dls []*download
	for d, bs := range s.blobs {
		if bs.seeding || bs.dl != nil {
			held = append(held, d)
		}
		if bs.dl != nil {
			dls = append(dls, bs.dl)
		}
		for c := range bs.conns {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()

	if s.tracker != nil {
		var wg sync.WaitGroup
		for _, d := range held {
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case s.announcing <- struct{}{}:
				case <-ctx.Done():
					return
				}
				_, _ = s.announce(ctx, d, trackerpb.Event_EVENT_STOPPED, nil)
				<-s.announcing
			}()
		}
		wg.Wait()
	}
	s.cancel()
	if s.pieceServer != nil {
		_ = s.pieceServer.Close()
	}
	for _, c := range conns {
		c.close(errors.New("agent shutting down"))
	}
	for _, dl := range dls {
		<-dl.done
	}
	s.wg.Wait()
	s.pool.close()
	return s.store.Close()
}
