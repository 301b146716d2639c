package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/pkg/tracker"
)

// Config is the tracker's YAML config file. Every field has a working
// default (DefaultConfig), so the file only names what differs:
//
//	listen: 0.0.0.0:7001
//	metricsListen: 0.0.0.0:7081
//	tls: {cert: /etc/shoal/tls/tracker.pem, key: /etc/shoal/tls/tracker-key.pem, ca: /etc/shoal/tls/ca.pem}
//	tracker:
//	  announceInterval: 30s
//	  peerTTL: 90s
type Config struct {
	// Listen is the gRPC address (shoal.tracker.v1.Tracker). Loopback by
	// default: exposing a service is a decision.
	Listen string `yaml:"listen"`
	// MetricsListen is the HTTP address of /metrics, /healthz and /readyz.
	MetricsListen string `yaml:"metricsListen"`
	// TLS, when cert and key are set, secures both listeners. With ca
	// (the cluster CA), gRPC clients must present a certificate signed by
	// it, and announces answer to it (see tracker.Options.
	// RequireIdentity); /debug/peers on the HTTP listener wants one too.
	// Without ca, announces are not authenticated: trusted networks only.
	// The key was clientCA before the three components shared one TLS
	// type; serverName does not apply (the tracker calls no one).
	TLS daemon.TLSConfig `yaml:"tls"`
	Log daemon.LogConfig `yaml:"log"`
	// ShutdownGrace is how long SIGTERM waits for announces in flight.
	// Announces take microseconds; the grace only covers slow clients.
	ShutdownGrace time.Duration `yaml:"shutdownGrace"`
	// Tracker tunes announce handling; see tracker.Config.
	Tracker tracker.Config `yaml:"tracker"`
}

// DefaultConfig is what `tracker` runs with when given nothing.
func DefaultConfig() Config {
	return Config{
		Listen:        "127.0.0.1:7001",
		MetricsListen: "127.0.0.1:7081",
		Log:           daemon.LogConfig{Level: "info", Format: "text"},
		ShutdownGrace: 10 * time.Second,
		Tracker:       tracker.DefaultConfig(),
	}
}

// load overlays the YAML file at path on c, rejecting unknown fields so
// that a misspelt setting is an error rather than silently the default.
func (c *Config) load(path string) error { return daemon.LoadYAML(path, c) }

func (c *Config) validate() error {
	if c.Listen == "" {
		return errors.New("config: listen is empty")
	}
	if c.MetricsListen == "" {
		return errors.New("config: metricsListen is empty")
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.TLS.ServerName != "" {
		return errors.New("config: tls.serverName does not apply to the tracker: it makes no TLS connections")
	}
	if c.ShutdownGrace <= 0 {
		return errors.New("config: shutdownGrace must be positive")
	}
	return c.Tracker.Validate()
}
