package agent

import (
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/internal/connlimit"
	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/pkg/peer/mirror"
	"github.com/shoal-dev/shoal/pkg/peer/swarm"
	"github.com/shoal-dev/shoal/pkg/tracker"
)

// Config is the agent's configuration, as read from its YAML file (keys in
// camelCase; see deploy/peer-agent.yaml). DefaultConfig runs with only
// Origin and, for agents to share pieces, the trackers to fill in: the
// seeders are learned from the origin and the peer address from the route
// to the trackers.
type Config struct {
	// Listen is the mirror's HTTP address (/v2/ for dockerd and containerd,
	// plus /metrics, /healthz, /readyz). Loopback by default: the clients
	// are on this host.
	Listen string `yaml:"listen"`
	// PeerListen is the gRPC address other agents fetch pieces from:
	// every interface, port 7002 (":7002"), so that other hosts reach it.
	PeerListen string `yaml:"peerListen"`
	// AdvertiseAddr is the peer address announced to the trackers. Empty
	// (the default): the bound PeerListen address when its host is a
	// specific one; on every interface, the port on this host's source
	// address of the route to the first tracker (what a UDP connect to it
	// picks), or, when no tracker resolves, the port alone for the tracker
	// to fill in with the address the announce came from. A loopback
	// address announced to a tracker on another host is reported as a
	// problem (log, /readyz).
	AdvertiseAddr string `yaml:"advertiseAddr"`
	// Origin is the base URL of the origin's registry API; manifests, tag
	// lists and blob authorizations go there, and push errors name it.
	Origin string `yaml:"origin"`
	// OriginSeeders are the origin nodes' seeder gRPC addresses: metainfo
	// comes from them, and pieces nobody else delivers. Empty (the
	// default): learned from the origin, which lists its cluster's seeders
	// in the Shoal-Seeders header of its /v2/ answer, asked again every
	// CheckInterval.
	OriginSeeders []string `yaml:"originSeeders"`
	// Tracker lists the trackers (the same list on every agent) and the
	// announce timeout and failover cooldown.
	Tracker tracker.ClientConfig `yaml:"tracker"`
	// CacheDir holds the piece store.
	CacheDir string `yaml:"cacheDir"`
	// CacheQuota bounds the piece store; least recently used blobs are
	// evicted past it. 20GiB.
	CacheQuota ByteSize `yaml:"cacheQuota"`
	// IngressLimit and EgressLimit cap the piece bytes per second this host
	// receives from and sends to peers and seeders; 0 (default) is
	// unlimited.
	IngressLimit ByteSize `yaml:"ingressLimit"`
	EgressLimit  ByteSize `yaml:"egressLimit"`
	// Mirror tunes the registry mirror (cache lifetimes, origin timeouts:
	// originTimeout, originDialTimeout, originHeaderTimeout).
	Mirror mirror.Config `yaml:"mirror"`
	// Swarm tunes the P2P engine (peer id, limits, timeouts).
	Swarm swarm.Config `yaml:"swarm"`
	// TLS secures the peer protocol: with cert and key the peer listener
	// serves TLS; with ca as well it requires client certificates signed
	// by it (mTLS), and the agent presents its certificate to peers,
	// seeders, trackers and the origin and verifies theirs against ca.
	// serverName is checked in peers', seeders' and trackers' certificates,
	// never the origin's (its registry API is checked by its own name).
	TLS TLSConfig `yaml:"tls"`
	Log LogConfig `yaml:"log"`
	// ShutdownGrace is how long SIGTERM waits for clients being served and
	// the stopped announces: 15s.
	ShutdownGrace time.Duration `yaml:"shutdownGrace"`
	// CheckInterval is how often the agent asks the origin for its seeders
	// and checks that the origin, the seeders and the trackers answer:
	// 30s. /readyz reports the last round; a change is logged.
	CheckInterval time.Duration `yaml:"checkInterval"`
	// Connections caps the connections one client address holds open on
	// the mirror listener; see connlimit.Config. Loopback, where the
	// host's dockerd and containerd connect from, is exempt by default, so
	// the cap matters when the mirror listens on an address other hosts or
	// pods reach. Past it: 429 with Retry-After, counted in
	// shoal_agent_connections_refused_total{reason}.
	Connections connlimit.Config `yaml:"connections"`
}

// TLSConfig is the same settings as the origin seeder's and the
// tracker's; Config.TLS says what the agent does with them.
type TLSConfig = daemon.TLSConfig

// LogConfig selects the log level (debug, info, warn, error) and format
// (text, json).
type LogConfig = daemon.LogConfig

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	tc := tracker.DefaultClientConfig()
	return Config{
		Listen:        "127.0.0.1:5050",
		PeerListen:    ":7002",
		Tracker:       tc,
		CacheDir:      "/var/cache/shoal-agent",
		CacheQuota:    20 << 30,
		Mirror:        mirror.DefaultConfig(),
		Swarm:         swarm.DefaultConfig(),
		Log:           LogConfig{Level: "info", Format: "text"},
		ShutdownGrace: 15 * time.Second,
		CheckInterval: 30 * time.Second,
		Connections:   connlimit.DefaultConfig(),
	}
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	switch {
	case c.Listen == "":
		return errors.New("config: listen is empty")
	case c.PeerListen == "":
		return errors.New("config: peerListen is empty")
	case c.Origin == "":
		return errors.New("config: origin (the origin's registry URL) is required")
	case c.CacheDir == "":
		return errors.New("config: cacheDir is empty")
	case c.CacheQuota <= 0:
		return errors.New("config: cacheQuota must be positive")
	case c.ShutdownGrace <= 0:
		return errors.New("config: shutdownGrace must be positive")
	case c.CheckInterval <= 0:
		return errors.New("config: checkInterval must be positive")
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := c.Swarm.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := c.Connections.Validate(); err != nil {
		return fmt.Errorf("config: connections: %w", err)
	}
	return nil
}
