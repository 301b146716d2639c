package seeder

import (
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/pkg/cluster"
	"github.com/shoal-dev/shoal/pkg/tracker"
)

// Config configures an origin node's seeder. DefaultConfig runs out of the
// box except for Listen, which is empty: the seeder is off until given an
// address.
type Config struct {
	// Listen is the gRPC address of the shoal.peer.v1.Peer service. Empty
	// turns the seeder (and cluster membership) off.
	Listen string `yaml:"listen"`
	// PieceListen is the address of the piece data path (internal/piecewire,
	// docs/p2p.md): agents that use it fetch piece bytes there, as
	// length-prefixed frames sent with sendfile(2) from the disk cache on a
	// plaintext connection, or over TLS 1.3 with the tls settings, while
	// their Exchange streams carry only control messages. Every Exchange
	// answer names its port (response header shoal-piece-port), so neither
	// agents nor the cluster need it configured; set a fixed port for
	// firewalls. Empty (default): Listen's host, a free port. "off": pieces
	// go on the Exchange streams only (to compare the two).
	PieceListen string `yaml:"pieceListen"`
	// Advertise is the address agents and other origin nodes dial: it is
	// announced to trackers and published to the cluster. Empty: Listen,
	// with an unspecified host (":7002", "0.0.0.0:7002") replaced by the
	// node's cluster address.
	Advertise string `yaml:"advertise"`
	// CacheDir holds local copies of the blobs this node owns, so that each
	// is read from storage once per owner, not once per piece request.
	CacheDir string `yaml:"cacheDir"`
	// CacheBytes is the cache's quota; least recently used blobs are
	// evicted beyond it (10 GiB). A blob larger than the whole quota is
	// served straight from storage.
	CacheBytes int64 `yaml:"cacheBytes"`
	// Replicas is R, the number of owners per blob (2): two owners keep a
	// blob seeded when one fails, without every node reading it.
	Replicas int `yaml:"replicas"`
	// MaxUploads bounds the pieces being sent at once, over all streams; a
	// request beyond it is rejected as busy so the agent asks elsewhere (32).
	MaxUploads int `yaml:"maxUploads"`
	// MaxStreams bounds open Exchange streams whose handshake came in and
	// was authorized; beyond it a new stream fails with RESOURCE_EXHAUSTED
	// (1024). Streams still waiting for their handshake do not count, so
	// clients that open streams and stay silent cannot take these slots.
	MaxStreams int `yaml:"maxStreams"`
	// MaxStreamsPerConn bounds the Exchange streams open on one client
	// connection, handshaken or not; beyond it a new stream fails with
	// RESOURCE_EXHAUSTED (64). An agent holds one stream per blob it is
	// pulling from this node, over one connection; 64 blobs at once is
	// more than an agent pulls, and it keeps one connection from holding
	// a large share of maxStreams.
	MaxStreamsPerConn int `yaml:"maxStreamsPerConn"`
	// HandshakeTimeout is how long a new Exchange stream may take to send
	// its handshake before it is ended with DEADLINE_EXCEEDED (10s): agents
	// send it at once, so only a stalled or hostile client waits that long.
	HandshakeTimeout time.Duration `yaml:"handshakeTimeout"`
	// MaxQueuedRequests bounds the pipelined requests waiting on one stream;
	// beyond it requests are rejected as busy (64).
	MaxQueuedRequests int `yaml:"maxQueuedRequests"`
	// ColdMetainfoRate bounds, per client (the peer id of its certificate
	// with mTLS, else its IP address), the GetMetainfo calls per second that
	// would make this node read a blob from storage: metainfo neither in
	// memory nor being computed, or an owned blob no longer in the cache.
	// Calls for blobs being pulled cost nothing. Beyond it:
	// RESOURCE_EXHAUSTED with a RetryInfo (2/s, with a burst of
	// ColdMetainfoBurst, 64: an image's layers at once). A valid capability
	// is needed anyway; this bounds what an entitled client can make the
	// node read. Other origin nodes (with mTLS) are not limited. 0: off.
	ColdMetainfoRate  float64 `yaml:"coldMetainfoRate"`
	ColdMetainfoBurst int     `yaml:"coldMetainfoBurst"`
	// SuperseedWindow is how long, at least, a piece just sent to one agent
	// is left to the swarm: other agents asking this node for it meanwhile
	// are answered REASON_AT_PEERS and fetch it from agents (15s). The
	// window is the longer of twice the time the piece took to send and
	// three times what this node's link, at its measured rate, takes to
	// send the whole blob once (the swarm spreads the blob over longer
	// than one send), clamped to [superseedWindow, superseedMaxWindow]
	// (2m); it ends at once when the recipient's stream breaks. 0 turns
	// superseeding off: every request is served. The floor is long
	// because a short one lets a piece go out again while the swarm is
	// still spreading it, and so do the piece's send time alone and one
	// blob's send time on slow links (docs/benchmarks.md, swarm).
	SuperseedWindow    time.Duration `yaml:"superseedWindow"`
	SuperseedMaxWindow time.Duration `yaml:"superseedMaxWindow"`
	// MaxUploadWait turns away (BUSY) a piece request that this node, at
	// the rate it has been sending while busy, would not finish sending
	// within this long behind what it already accepted (3s): on a slow
	// link, accepting everything made every piece crawl past the agents'
	// timeouts, to be cancelled and sent again. Short, because the fewer
	// pieces share the link the sooner each reaches the swarm to be spread
	// further, and because many TCP flows on a slow link share it unevenly:
	// some stall in retransmission backoff, past the agents' piece timeout,
	// while others go. A request is always taken when nothing is being
	// sent, however large its piece. Until the rate is measured, four
	// pieces go out at once. 0: no such limit (maxUploads alone).
	MaxUploadWait time.Duration `yaml:"maxUploadWait"`
	// EgressBytesPerSecond caps piece data sent by this node (token bucket,
	// burst of one 1 MiB chunk). 0: no cap.
	EgressBytesPerSecond int64 `yaml:"egressBytesPerSecond"`
	// AnnounceInterval is the re-announce period when the tracker gives none
	// or is unreachable (30s, the tracker's default).
	AnnounceInterval time.Duration `yaml:"announceInterval"`
	// AnnounceIdle is how long a blob that could not be cached (larger than
	// the quota) is still announced after its last request (10m). Cached
	// blobs are announced for as long as they stay in the cache.
	AnnounceIdle time.Duration `yaml:"announceIdle"`
	// MetainfoEntries is how many blobs' metainfo is kept in memory (256;
	// at most 32 KiB each for blobs up to 4 GiB).
	MetainfoEntries int `yaml:"metainfoEntries"`
	// TLS secures the gRPC listener and this node's own calls to trackers
	// and other origin nodes.
	TLS TLSConfig `yaml:"tls"`
	// Tracker lists the trackers owned blobs are announced to. None: no
	// announcing (agents then learn of origins from their own config).
	Tracker tracker.ClientConfig `yaml:"tracker"`
	// Cluster is this node's membership in the origin cluster.
	Cluster cluster.Config `yaml:"cluster"`
}

// TLSConfig is the gRPC listener's certificate and the cluster CA, the
// same settings as the tracker's and the agent's (daemon.TLSConfig). With
// CA, clients must present a certificate it signed (mTLS), and trackers and
// other origin nodes are verified against it.
type TLSConfig = daemon.TLSConfig

// DefaultConfig returns the documented defaults with the seeder off.
func DefaultConfig() Config {
	return Config{
		CacheDir:           "/var/cache/shoal/origin",
		CacheBytes:         10 << 30,
		Replicas:           2,
		MaxUploads:         32,
		MaxStreams:         1024,
		MaxStreamsPerConn:  64,
		HandshakeTimeout:   10 * time.Second,
		ColdMetainfoRate:   2,
		ColdMetainfoBurst:  64,
		MaxQueuedRequests:  64,
		SuperseedWindow:    15 * time.Second,
		MaxUploadWait:      3 * time.Second,
		SuperseedMaxWindow: 2 * time.Minute,
		AnnounceInterval:   30 * time.Second,
		AnnounceIdle:       10 * time.Minute,
		MetainfoEntries:    256,
		Tracker:            tracker.DefaultClientConfig(),
		Cluster:            cluster.DefaultConfig(),
	}
}

// Validate reports the first unusable field. The cluster section is
// checked when membership starts, since the program fills in its Meta.
func (c Config) Validate() error {
	switch {
	case c.CacheDir == "":
		return errors.New("seeder: cacheDir is empty")
	case c.CacheBytes <= 0:
		return fmt.Errorf("seeder: cacheBytes must be positive, got %d", c.CacheBytes)
	case c.Replicas <= 0:
		return fmt.Errorf("seeder: replicas must be positive, got %d", c.Replicas)
	case c.MaxUploads <= 0 || c.MaxStreams <= 0 || c.MaxStreamsPerConn <= 0 || c.MaxQueuedRequests <= 0:
		return errors.New("seeder: maxUploads, maxStreams, maxStreamsPerConn and maxQueuedRequests must be positive")
	case c.ColdMetainfoRate < 0 || c.ColdMetainfoRate > 0 && c.ColdMetainfoBurst <= 0:
		return errors.New("seeder: coldMetainfoRate must not be negative, and coldMetainfoBurst must be positive when it is on")
	case c.HandshakeTimeout <= 0:
		return fmt.Errorf("seeder: handshakeTimeout must be positive, got %s", c.HandshakeTimeout)
	case c.MaxUploadWait < 0:
		return fmt.Errorf("seeder: maxUploadWait must not be negative, got %s", c.MaxUploadWait)
	case c.SuperseedWindow < 0 || c.SuperseedMaxWindow < 0:
		return errors.New("seeder: superseedWindow and superseedMaxWindow must not be negative")
	case c.SuperseedWindow > 0 && c.SuperseedMaxWindow < c.SuperseedWindow:
		return fmt.Errorf("seeder: superseedMaxWindow (%s) is shorter than superseedWindow (%s)", c.SuperseedMaxWindow, c.SuperseedWindow)
	case c.EgressBytesPerSecond < 0:
		return fmt.Errorf("seeder: egressBytesPerSecond must not be negative, got %d", c.EgressBytesPerSecond)
	case c.AnnounceInterval <= 0 || c.AnnounceIdle <= 0:
		return errors.New("seeder: announceInterval and announceIdle must be positive")
	case c.MetainfoEntries <= 0:
		return fmt.Errorf("seeder: metainfoEntries must be positive, got %d", c.MetainfoEntries)
	case c.PieceListen != "" && c.PieceListen != PieceListenOff && !isHostPort(c.PieceListen):
		return fmt.Errorf("seeder: pieceListen %q is neither host:port nor %q", c.PieceListen, PieceListenOff)
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("seeder: %w", err)
	}
	return nil
}
