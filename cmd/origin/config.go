package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/pkg/daemon"
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
	// Storage is the storage URL: file:///dir, inmemory:// or
	// hdfs://nn1:8020,nn2:8020/root?user=u.
	Storage string `yaml:"storage"`
	TLS     struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	Log daemon.LogConfig `yaml:"log"`
	// ShutdownGrace is how long SIGTERM waits for requests in flight (a
	// layer upload can take a while) before closing connections.
	ShutdownGrace time.Duration `yaml:"shutdownGrace"`
	// AdminListen is the address of the admin API (/admin/v1/gc); empty,
	// the default, turns it off. The admin API has no authentication yet:
	// give it a loopback address, never an exposed one.
	AdminListen string `yaml:"adminListen"`
	// GC is garbage collection and retention; see gc.Config.
	GC gc.Config `yaml:"gc"`
	// Registry tunes the registry API; see origin.Config.
	Registry origin.Config `yaml:"registry"`
	// Seeder makes the node a P2P seeder in an origin cluster; see seeder.Config.
	Seeder seeder.Config `yaml:"seeder"`
}

// DefaultConfig is what `origin` runs with when given nothing.
func DefaultConfig() Config {
	return Config{
		Listen:        "127.0.0.1:5000",
		Storage:       "file:///var/lib/shoal",
		Log:           daemon.LogConfig{Level: "info", Format: "text"},
		ShutdownGrace: 30 * time.Second,
		Registry:      origin.DefaultConfig(),
		GC:            gc.DefaultConfig(),
		Seeder:        seeder.DefaultConfig(),
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
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("config: TLS needs both cert and key")
	}
	if err := c.GC.Validate(); err != nil {
		return fmt.Errorf("config: gc: %w", err)
	}
	if c.ShutdownGrace <= 0 {
		return errors.New("config: shutdownGrace must be positive")
	}
	return nil
}
