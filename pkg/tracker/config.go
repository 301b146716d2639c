package tracker

import (
	"fmt"
	"time"
)

// Config is the tracker's behaviour. The zero value is not usable; start
// from DefaultConfig.
type Config struct {
	// AnnounceInterval is how often agents are told to re-announce. Agents
	// also announce on start, completion and stop, and learn about each
	// other's new pieces directly, so this only has to be short enough for
	// newcomers to find peers that joined since: 30s.
	AnnounceInterval time.Duration `yaml:"announceInterval"`
	// PeerTTL is how long an entry lives without a re-announce. Three
	// intervals: one lost announce (or a slow tracker failover) does not
	// drop a peer, a dead one is gone within two minutes.
	PeerTTL time.Duration `yaml:"peerTTL"`
	// SweepInterval is how often expired entries are removed from memory.
	// Expired entries are never handed out regardless; the sweep only
	// reclaims memory.
	SweepInterval time.Duration `yaml:"sweepInterval"`
	// DefaultPeers is how many peers an announce gets when it does not say
	// (num_want = 0). An agent keeps a handful of connections per blob; 20
	// leaves room to replace bad or busy peers without another announce,
	// while keeping answers (and the tracker's work) small.
	DefaultPeers int `yaml:"defaultPeers"`
	// MaxPeers caps num_want, bounding the answer and the work per announce.
	MaxPeers int `yaml:"maxPeers"`
	// MinOrigins is how many origin seeders every list keeps, so an agent
	// always has a source holding every piece: 1.
	MinOrigins int `yaml:"minOrigins"`
	// IPv4PrefixBits and IPv6PrefixBits define "nearby" for peers without a
	// locality label: same /24 or same /64, a rack or a subnet in most
	// datacenters.
	IPv4PrefixBits int `yaml:"ipv4PrefixBits"`
	IPv6PrefixBits int `yaml:"ipv6PrefixBits"`
	// Shards is the number of independently locked parts of the peer table.
	// 64 makes lock contention negligible at tens of thousands of announces
	// per second while costing a few KiB.
	Shards int `yaml:"shards"`
	// MaxPeersPerBlob caps one blob's entries; origin seeders are not
	// counted. An agent announcing into a full swarm still gets peers but
	// is not listed itself (counted in shoal_tracker_shed_total{reason=
	// "blob_full"}). 10,000: more hosts than one swarm needs to spread a
	// blob, since an announce only ranks a sample of a large swarm anyway.
	MaxPeersPerBlob int `yaml:"maxPeersPerBlob"`
	// MaxBlobs caps the blobs in the table. An announce for a new blob
	// beyond it is refused with RESOURCE_EXHAUSTED, and the agent tries
	// its next tracker ({reason="blobs"}). 200,000: the layers a large
	// cluster's hosts hold at once, with room to spare.
	MaxBlobs int `yaml:"maxBlobs"`
	// MaxEntries caps the (peer, blob) entries of the table, bounding its
	// memory (~160 bytes an entry: 2,000,000 is ~320 MiB, twice a fleet of
	// 5,000 hosts holding 200 layers each). Beyond it, a new entry for a
	// known blob is answered but not recorded, one for a new blob is
	// refused with RESOURCE_EXHAUSTED ({reason="entries"}).
	MaxEntries int `yaml:"maxEntries"`
}

// DefaultConfig returns a configuration that works out of the box.
func DefaultConfig() Config {
	return Config{
		AnnounceInterval: 30 * time.Second,
		PeerTTL:          90 * time.Second,
		SweepInterval:    15 * time.Second,
		DefaultPeers:     20,
		MaxPeers:         100,
		MinOrigins:       1,
		IPv4PrefixBits:   24,
		IPv6PrefixBits:   64,
		Shards:           64,
		MaxPeersPerBlob:  10_000,
		MaxBlobs:         200_000,
		MaxEntries:       2_000_000,
	}
}

// limits returns the table's limits.
func (c Config) limits() Limits {
	return Limits{PeersPerBlob: c.MaxPeersPerBlob, Blobs: c.MaxBlobs, Entries: c.MaxEntries}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.AnnounceInterval <= 0:
		return fmt.Errorf("tracker config: announceInterval must be positive, got %s", c.AnnounceInterval)
	case c.PeerTTL < c.AnnounceInterval:
		return fmt.Errorf("tracker config: peerTTL (%s) must be at least announceInterval (%s), or peers expire between announces", c.PeerTTL, c.AnnounceInterval)
	case c.SweepInterval <= 0:
		return fmt.Errorf("tracker config: sweepInterval must be positive, got %s", c.SweepInterval)
	case c.MaxPeers < 1:
		return fmt.Errorf("tracker config: maxPeers must be at least 1, got %d", c.MaxPeers)
	case c.DefaultPeers < 1 || c.DefaultPeers > c.MaxPeers:
		return fmt.Errorf("tracker config: defaultPeers must be in [1, maxPeers=%d], got %d", c.MaxPeers, c.DefaultPeers)
	case c.MinOrigins < 0:
		return fmt.Errorf("tracker config: minOrigins must not be negative, got %d", c.MinOrigins)
	case c.IPv4PrefixBits < 0 || c.IPv4PrefixBits > 32:
		return fmt.Errorf("tracker config: ipv4PrefixBits must be in [0, 32], got %d", c.IPv4PrefixBits)
	case c.IPv6PrefixBits < 0 || c.IPv6PrefixBits > 128:
		return fmt.Errorf("tracker config: ipv6PrefixBits must be in [0, 128], got %d", c.IPv6PrefixBits)
	case c.Shards < 1:
		return fmt.Errorf("tracker config: shards must be at least 1, got %d", c.Shards)
	case c.MaxPeersPerBlob < 1:
		return fmt.Errorf("tracker config: maxPeersPerBlob must be at least 1, got %d", c.MaxPeersPerBlob)
	case c.MaxBlobs < 1:
		return fmt.Errorf("tracker config: maxBlobs must be at least 1, got %d", c.MaxBlobs)
	case c.MaxEntries < 1:
		return fmt.Errorf("tracker config: maxEntries must be at least 1, got %d", c.MaxEntries)
	}
	return nil
}
