// Package cluster is the origin nodes' membership: which nodes are alive
// (hashicorp/memberlist gossip over UDP and TCP) and which of them own a
// blob (rendezvous hashing, Owners). Each node publishes its seeder's gRPC
// address as memberlist metadata so that any node can reach a blob's owners.
//
// A node started with no join list forms a cluster of one and works alone;
// other nodes may join it later.
package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures one node's membership.
type Config struct {
	// NodeName is unique in the cluster; ownership is hashed on it, so keep
	// it stable across restarts (default, or when empty: the host name).
	NodeName string `yaml:"nodeName"`
	// BindAddr is the address gossip listens on, UDP and TCP (default
	// 127.0.0.1: a single node needs no network; set it to the node's LAN
	// address, or 0.0.0.0, to form a cluster).
	BindAddr string `yaml:"bindAddr"`
	// BindPort is the gossip port, UDP and TCP (default 7946, memberlist's;
	// 0 picks a free port, as tests do).
	BindPort int `yaml:"bindPort"`
	// AdvertiseAddr is the address other nodes reach this one at, when it
	// differs from BindAddr (NAT, 0.0.0.0). Empty: memberlist picks the
	// bind address, or a private address of the host when binding 0.0.0.0.
	AdvertiseAddr string `yaml:"advertiseAddr"`
	// AdvertisePort goes with AdvertiseAddr (0: the bind port).
	AdvertisePort int `yaml:"advertisePort"`
	// Join lists host:port of existing members; one reachable is enough.
	// An entry "dns:NAME:PORT" stands for every address NAME resolves to
	// (A and AAAA records; a Kubernetes headless Service names every
	// origin pod), looked up again every RejoinInterval: addresses that
	// are not members yet are joined, so nodes that started apart (each
	// alone, or two groups) merge. Empty: start a new cluster. A failed
	// join does not stop the node: it keeps retrying every RejoinInterval
	// while it is alone.
	Join []string `yaml:"join"`
	// KeyFile holds the gossip encryption key, base64 of 16, 24 or 32
	// bytes (AES-128/192/256), the same on every node: gossip is then
	// encrypted and messages without the key are dropped, so an outsider
	// can neither read the membership nor join. Empty: plaintext gossip, for
	// a trusted network only.
	KeyFile string `yaml:"keyFile"`
	// RejoinInterval is how often a node that is alone retries Join, and
	// how often dns: entries are looked up again (10s).
	RejoinInterval time.Duration `yaml:"rejoinInterval"`
	// Meta is published to the other nodes: the node's seeder gRPC address.
	// Set by the program, not the config file.
	Meta string `yaml:"-"`

	// The numbers below are memberlist's LAN defaults, kept because they
	// detect a dead node in a few seconds on a LAN at negligible bandwidth,
	// and are fast enough for tests (a join converges in one TCP push/pull,
	// so tests never wait on them).

	// ProbeInterval is how often a random member is probed (1s).
	ProbeInterval time.Duration `yaml:"probeInterval"`
	// ProbeTimeout is how long a probe waits for an ack before asking
	// others to probe indirectly; about the network's 99th percentile RTT
	// (500ms).
	ProbeTimeout time.Duration `yaml:"probeTimeout"`
	// GossipInterval is how often queued broadcasts are gossiped (200ms).
	GossipInterval time.Duration `yaml:"gossipInterval"`
	// PushPullInterval is how often full state is exchanged with a random
	// member, which heals anything gossip missed (30s).
	PushPullInterval time.Duration `yaml:"pushPullInterval"`
	// SuspicionMult scales how long a suspected node has to refute before
	// it is declared dead: SuspicionMult × log10(N+1) × ProbeInterval, so
	// about 4s for small clusters (4).
	SuspicionMult int `yaml:"suspicionMult"`
}

// DefaultConfig returns a single-node configuration with memberlist's LAN
// timings (see the fields for the reason behind each number).
func DefaultConfig() Config {
	lan := memberlist.DefaultLANConfig()
	return Config{
		NodeName:         hostname(),
		BindAddr:         "127.0.0.1",
		BindPort:         7946,
		RejoinInterval:   10 * time.Second,
		ProbeInterval:    lan.ProbeInterval,
		ProbeTimeout:     lan.ProbeTimeout,
		GossipInterval:   lan.GossipInterval,
		PushPullInterval: lan.PushPullInterval,
		SuspicionMult:    lan.SuspicionMult,
	}
}

func hostname() string {
	name, err := os.Hostname()
	if err != nil || name == "" {
		return "origin"
	}
	return name
}

// Validate reports the first unusable field. An empty NodeName is allowed:
// Start uses the host name.
func (c Config) Validate() error {
	switch {
	case c.BindPort < 0 || c.BindPort > 65535:
		return fmt.Errorf("cluster: bindPort %d out of range", c.BindPort)
	case c.ProbeInterval <= 0 || c.ProbeTimeout <= 0 || c.GossipInterval <= 0 || c.PushPullInterval <= 0:
		return errors.New("cluster: probeInterval, probeTimeout, gossipInterval and pushPullInterval must be positive")
	case c.SuspicionMult <= 0:
		return errors.New("cluster: suspicionMult must be positive")
	case c.RejoinInterval <= 0:
		return errors.New("cluster: rejoinInterval must be positive")
	case len(c.Meta) > memberlist.MetaMaxSize:
		return fmt.Errorf("cluster: meta is %d bytes, memberlist allows %d", len(c.Meta), memberlist.MetaMaxSize)
	}
	for _, j := range c.Join {
		if rest, ok := strings.CutPrefix(j, DNSJoinPrefix); ok {
			if host, _, err := net.SplitHostPort(rest); err != nil || host == "" {
				return fmt.Errorf("cluster: join entry %q: want dns:NAME:PORT", j)
			}
		}
	}
	return nil
}

// Cluster is this node's live view of the membership. It is safe for
// concurrent use.
type Cluster struct {
	cfg Config
	ml  *memberlist.Memberlist
	// lookup resolves dns: join entries.
	lookup func(ctx context.Context, host string) ([]net.IPAddr, error)
	view   *view
	log    *slog.Logger
	stop   chan struct{}
	done   sync.WaitGroup

	// This node as memberlist started it. Memberlist's own record of it
	// is not read again: memberlist rewrites it (incarnation) under a lock
	// of its own, and its name, address and meta never change after
	// Create (nothing calls UpdateNode).
	self      Member
	localAddr string
	advertise net.IP

	closeOnce sync.Once
	closeErr  error
}

// Start creates the node, listening on BindAddr:BindPort, and joins the
// nodes in cfg.Join if any. Failing to reach them is logged, not returned:
// the node works alone and keeps trying.
func Start(cfg Config, logger *slog.Logger) (*Cluster, error) {
	return startWithLookup(cfg, logger, net.DefaultResolver.LookupIPAddr)
}

// startWithLookup is Start with the resolver of dns: join entries.
func startWithLookup(cfg Config, logger *slog.Logger, lookup func(context.Context, string) ([]net.IPAddr, error)) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.NodeName == "" {
		cfg.NodeName = hostname()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertisePort = cfg.BindPort
	if cfg.AdvertiseAddr != "" {
		mc.AdvertiseAddr = cfg.AdvertiseAddr
		if cfg.AdvertisePort != 0 {
			mc.AdvertisePort = cfg.AdvertisePort
		}
	}
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.Delegate = meta(cfg.Meta)
	v := &view{members: map[string]Member{}, gossip: map[string]string{}}
	mc.Events = v
	if cfg.KeyFile != "" {
		key, err := readKey(cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		mc.SecretKey = key
	}
	mc.Logger = log.New(&logWriter{log: logger.With("component", "memberlist")}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("starting cluster membership on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	// Create has set this node alive before returning, and only
	// UpdateNode would rewrite these fields of its record.
	local := ml.LocalNode()
	c := &Cluster{
		cfg: cfg, ml: ml, view: v, log: logger, stop: make(chan struct{}), lookup: lookup,
		self:      Member{Name: local.Name, Addr: string(local.Meta)},
		localAddr: net.JoinHostPort(local.Addr.String(), strconv.Itoa(int(local.Port))),
		advertise: slices.Clone(local.Addr),
	}
	if len(cfg.Join) > 0 {
		c.join(false)
		c.done.Add(1)
		go c.rejoin()
	}
	return c, nil
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster: reading gossip key: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip key %s is not base64: %w", path, err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("cluster: gossip key %s is %d bytes, want 16, 24 or 32", path, n)
	}
	return key, nil
}

// join joins the members of the join list, dns: entries resolved now.
// With onlyNew, addresses of live members (and this node's) are left out,
// and nothing is done when no address is left.
func (c *Cluster) join(onlyNew bool) {
	addrs, err := resolveJoin(context.Background(), c.cfg.Join, c.lookup)
	if err != nil {
		c.log.Warn("resolving the origin cluster's join list", "join", c.cfg.Join, "err", err)
	}
	if onlyNew {
		known := c.view.gossipAddrs()
		known[c.localAddr] = true
		addrs = slices.DeleteFunc(addrs, func(a string) bool { return known[a] })
	}
	if len(addrs) == 0 {
		if !onlyNew {
			c.log.Warn("joining the origin cluster failed: no address to join; working alone and retrying", "join", c.cfg.Join)
		}
		return
	}
	n, err := c.ml.Join(addrs)
	if err != nil {
		c.log.Warn("joining the origin cluster failed; working alone and retrying", "join", addrs, "contacted", n, "err", err)
		return
	}
	c.log.Info("joined the origin cluster", "contacted", n, "members", c.ml.NumMembers())
}

// rejoin retries Join while the node is alone: a node started before the
// others, or cut off from them, finds its way back without a restart.
// With dns: entries it also joins, at every tick, addresses the names
// resolve to that are not members yet.
func (c *Cluster) rejoin() {
	defer c.done.Done()
	t := time.NewTicker(c.cfg.RejoinInterval)
	defer t.Stop()
	dns := slices.ContainsFunc(c.cfg.Join, func(j string) bool { return strings.HasPrefix(j, DNSJoinPrefix) })
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			switch {
			case c.ml.NumMembers() <= 1:
				c.join(false)
			case dns:
				c.join(true)
			}
		}
	}
}

// LocalAddr is the address (host:port) other nodes gossip with this one
// at: what another node puts in its Join list.
func (c *Cluster) LocalAddr() string { return c.localAddr }

// AdvertiseIP is the IP other nodes see this one at. A seeder listening on
// an unspecified address (":7002") publishes this IP with its port.
func (c *Cluster) AdvertiseIP() net.IP { return slices.Clone(c.advertise) }

// Self is this node.
func (c *Cluster) Self() Member { return c.self }

// Members returns the live members (this node included), sorted by name.
func (c *Cluster) Members() []Member { return c.view.list() }

// Owners returns the r owners of digest among the live members, best first.
func (c *Cluster) Owners(digest string, r int) []Member {
	return Owners(digest, c.Members(), r)
}

// Close leaves the cluster, telling the others at once (instead of letting
// them detect a dead node), waiting up to timeout for the message to go
// out, then stops gossip. Later calls return the first call's result.
func (c *Cluster) Close(timeout time.Duration) error {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.done.Wait()
		var errs []error
		if err := c.ml.Leave(timeout); err != nil {
			errs = append(errs, fmt.Errorf("leaving the origin cluster: %w", err))
		}
		if err := c.ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("stopping cluster membership: %w", err))
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// meta is the memberlist delegate that publishes the node's metadata. The
// rest of the Delegate interface (user messages and state) is unused.
type meta string

func (m meta) NodeMeta(limit int) []byte {
	if len(m) > limit {
		// Validate rejects this before Start; never send a truncated address.
		return nil
	}
	return []byte(m)
}
func (meta) NotifyMsg([]byte)                {}
func (meta) GetBroadcasts(int, int) [][]byte { return nil }
func (meta) LocalState(bool) []byte          { return nil }
func (meta) MergeRemoteState([]byte, bool)   {}

// view is the membership as memberlist's event callbacks report it: the
// members alive or suspected, as memberlist.Members would list them.
//
// It is kept here, rather than read from memberlist.Members, because the
// nodes memberlist.Members returns are its live records: its gossip
// goroutines rewrite a member's meta and address in place, under a lock
// callers cannot take, whenever the member announces a newer incarnation
// (as a loaded node does to refute a suspicion). The callbacks run under
// that lock, so copying the fields there is safe.
type view struct {
	mu      sync.RWMutex
	members map[string]Member // by name
	gossip  map[string]string // member name -> gossip host:port
}

func (v *view) NotifyJoin(n *memberlist.Node)   { v.set(n) }
func (v *view) NotifyUpdate(n *memberlist.Node) { v.set(n) }

func (v *view) NotifyLeave(n *memberlist.Node) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.members, n.Name)
	delete(v.gossip, n.Name)
}

func (v *view) set(n *memberlist.Node) {
	// string(...) copies Meta, which memberlist may replace later.
	m := Member{Name: n.Name, Addr: string(n.Meta)}
	gossip := n.Address()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.members[m.Name] = m
	v.gossip[m.Name] = gossip
}

// gossipAddrs returns the set of the members' gossip addresses.
func (v *view) gossipAddrs() map[string]bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make(map[string]bool, len(v.gossip))
	for _, a := range v.gossip {
		out[a] = true
	}
	return out
}

// list returns the members sorted by name.
func (v *view) list() []Member {
	v.mu.RLock()
	out := make([]Member, 0, len(v.members))
	for _, m := range v.members {
		out = append(out, m)
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

var _ memberlist.EventDelegate = (*view)(nil)

// logWriter turns memberlist's "[LEVEL] memberlist: msg" lines into slog
// records of the matching level, so that its warnings are not lost among
// its debug chatter.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, p := range logPrefixes {
		if rest, ok := bytes.CutPrefix(line, []byte(p.prefix)); ok {
			level, line = p.level, bytes.TrimSpace(rest)
			break
		}
	}
	// Gossip that races Shutdown fails on the closed socket; that is
	// expected, not an error.
	if level > slog.LevelDebug && bytes.Contains(line, []byte("use of closed network connection")) {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, string(bytes.TrimPrefix(line, []byte("memberlist: "))))
	return len(p), nil
}

var _ io.Writer = (*logWriter)(nil)

var logPrefixes = [...]struct {
	prefix string
	level  slog.Level
}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}}

// DNSJoinPrefix marks a join entry whose name stands for every address it
// resolves to: "dns:shoal-origin-headless.ns.svc:7946".
const DNSJoinPrefix = "dns:"

// resolveJoin expands the join list: a dns: entry becomes one host:port per
// address its name resolves to now; other entries are kept as they are
// (memberlist resolves a plain host name itself). A name that does not
// resolve is reported, and the other entries are still returned.
func resolveJoin(ctx context.Context, join []string, lookup func(context.Context, string) ([]net.IPAddr, error)) ([]string, error) {
	var out []string
	var errs []error
	for _, j := range join {
		rest, ok := strings.CutPrefix(j, DNSJoinPrefix)
		if !ok {
			out = append(out, j)
			continue
		}
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			errs = append(errs, fmt.Errorf("join entry %q: want dns:NAME:PORT: %w", j, err))
			continue
		}
		// A resolver that does not answer must not hold the rejoin loop
		// (and Close, which waits for it) for long.
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ips, err := lookup(lctx, host)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("looking up %s: %w", host, err))
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip.IP.String(), port))
		}
	}
	return out, errors.Join(errs...)
}
