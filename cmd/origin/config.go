package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/internal/connlimit"
	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/origin/seeder"
)

// Config is the origin's YAML config file. Every field has a working
// default (DefaultConfig), so the file only names what differs.
type Config struct {
	// Listen is the address of the registry API, /metrics, /healthz and
	// /readyz. Loopback by default: exposing a registry is a decision.
	Listen string `yaml:"listen"`
	// Storage is the storage URL: file:///dir, inmemory://,
	// hdfs://nn1:8020,nn2:8020/root?user=u, s3://, azure://, gs://
	// (docs/storage.md). Default: file:///var/lib/shoal run as root,
	// otherwise the user's $XDG_DATA_HOME/shoal (~/.local/share/shoal).
	Storage string `yaml:"storage"`
	TLS     struct {
		// Cert is the PEM certificate (chain) of the registry listener,
		// which then serves HTTPS; it needs Key. Empty: plain HTTP.
		Cert string `yaml:"cert"`
		// Key is Cert's PEM private key.
		Key string `yaml:"key"`
		// ClientCA is a PEM file of the CAs whose client certificates
		// name machines for the access rules' cert:NAME subjects. A
		// certificate is verified when a client presents one and never
		// required, so that anonymous pulls still work. Needs cert and key.
		ClientCA string `yaml:"clientCA"`
	} `yaml:"tls"`
	Log daemon.LogConfig `yaml:"log"`
	// ShutdownGrace is how long SIGTERM waits for requests in flight (a
	// layer upload can take a while) before closing connections.
	ShutdownGrace time.Duration `yaml:"shutdownGrace"`
	// ReadHeaderTimeout bounds reading a request's headers on the registry
	// listener. 10s, as the agent's: clients send them at once, and one that
	// trickles them (slowloris) holds a connection no longer. Request
	// bodies have a progress deadline instead (registry.bodyTimeout), since
	// an honest layer upload may take any time. 0 turns it off (for
	// measuring what it costs; never in production).
	ReadHeaderTimeout time.Duration `yaml:"readHeaderTimeout"`
	// IdleTimeout closes a keep-alive connection of the registry listener
	// that has been idle this long. 5m: clients reuse connections between
	// the requests of a pull or push, not for longer. 0 turns it off.
	IdleTimeout time.Duration `yaml:"idleTimeout"`
	// Connections caps the connections one client address holds open on
	// the registry listener; see connlimit.Config. Past the cap a
	// connection is answered 429 with Retry-After (closed, over TLS) and
	// counted in shoal_origin_connections_refused_total{reason}.
	Connections connlimit.Config `yaml:"connections"`
	// AdminListen is the address of the admin API (/admin/v1/gc,
	// /admin/v1/auth/check); empty, the default, turns it off. With access
	// control on, every admin request needs credentials allowed the admin
	// action; without it, anyone who reaches the address is an admin, so
	// keep it on loopback.
	AdminListen string `yaml:"adminListen"`
	// AdminHosts are further Host values the admin API answers to
	// ("host" or "host:port"; without a port, the listener's). It always
	// answers to its own address, and to localhost, 127.0.0.1 and [::1] when
	// it listens on loopback; any other Host or Origin is refused, which
	// keeps web pages (DNS rebinding, cross-site forms) out of it.
	AdminHosts []string `yaml:"adminHosts"`
	// SigningKey is a PEM file with the Ed25519 key (PKCS #8, as `openssl
	// genpkey -algorithm ed25519` writes) that signs registry tokens, P2P
	// capabilities and piece metainfo. Empty, the default: the key kept in
	// storage at /shoal/v1/auth/signing-key.pem, created by the first node
	// to start and shared by every node on that storage.
	SigningKey string `yaml:"signingKey"`
	// CapabilityTTL is how long the P2P capability handed out with an
	// authorized blob HEAD or GET stays valid (30m). Seeders and agents
	// check it when a stream opens, not during one, but a long download
	// keeps dialing peers it learns of late with the capability it got at
	// its start, so it must outlive the slowest pull; the price is that a
	// client whose access is revoked can fetch that blob's pieces for up
	// to this long.
	CapabilityTTL time.Duration `yaml:"capabilityTTL"`
	// Auth is access control (docs/auth.md). Without users or rules, the
	// default, the origin is open to anyone who can reach it. The
	// --auth-config file, when given, replaces this section.
	Auth auth.Config `yaml:"auth"`
	// GC is garbage collection and retention; see gc.Config.
	GC gc.Config `yaml:"gc"`
	// Registry tunes the registry API; see origin.Config.
	Registry origin.Config `yaml:"registry"`
	// Seeder makes the node a P2P seeder in an origin cluster; see seeder.Config.
	Seeder seeder.Config `yaml:"seeder"`
}

// DefaultConfig is what `origin` runs with when given nothing. Its
// directories are the system ones for root and per-user ones otherwise
// (daemon.Dirs), so that a first try needs no root.
func DefaultConfig() Config { return defaultConfig(daemon.DefaultDirs()) }

func defaultConfig(dirs daemon.Dirs) Config {
	seed := seeder.DefaultConfig()
	seed.CacheDir = dirs.Cache(seed.CacheDir, "origin")
	return Config{
		Listen:            "127.0.0.1:5000",
		Storage:           "file://" + dirs.Data("/var/lib/shoal", ""),
		Log:               daemon.LogConfig{Level: "info", Format: "text"},
		ShutdownGrace:     30 * time.Second,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		Connections:       connlimit.DefaultConfig(),
		CapabilityTTL:     origin.DefaultCapabilityTTL,
		Auth:              auth.DefaultConfig(),
		Registry:          origin.DefaultConfig(),
		GC:                gc.DefaultConfig(),
		Seeder:            seed,
	}
}

func (c *Config) load(path string) error { return daemon.LoadYAML(path, c) }

func (c *Config) validate() error {
	if c.Listen == "" {
		return errors.New("config: listen is empty")
	}
	if c.Storage == "" {
		return errors.New("config: storage is empty")
	}
	if c.CapabilityTTL <= 0 {
		return errors.New("config: capabilityTTL must be positive")
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("config: TLS needs both cert and key")
	}
	if c.TLS.ClientCA != "" && c.TLS.Cert == "" {
		return errors.New("config: tls.clientCA needs tls.cert and tls.key: client certificates come only over TLS")
	}
	if err := c.Auth.Validate(); err != nil {
		return fmt.Errorf("config: auth: %w", err)
	}
	if err := c.GC.Validate(); err != nil {
		return fmt.Errorf("config: gc: %w", err)
	}
	if c.ShutdownGrace <= 0 {
		return errors.New("config: shutdownGrace must be positive")
	}
	if c.ReadHeaderTimeout < 0 || c.IdleTimeout < 0 {
		return errors.New("config: readHeaderTimeout and idleTimeout must not be negative (0 turns them off)")
	}
	if err := c.Connections.Validate(); err != nil {
		return fmt.Errorf("config: connections: %w", err)
	}
	return nil
}
