package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/pkg/tracker"
)

// Config is the tracker's YAML config file. Every field has a working
// default (DefaultConfig), so the file only names what differs:
//
//	listen: 0.0.0.0:7001
//	metricsListen: 0.0.0.0:7081
//	tls: {cert: /etc/shoal/tls/tracker.pem, key: /etc/shoal/tls/tracker-key.pem, clientCA: /etc/shoal/tls/ca.pem}
//	tracker:
//	  announceInterval: 30s
//	  peerTTL: 90s
type Config struct {
	// Listen is the gRPC address (shoal.tracker.v1.Tracker). Loopback by
	// default: exposing a service is a decision.
	Listen string `yaml:"listen"`
	// MetricsListen is the HTTP address of /metrics, /healthz and /readyz.
	MetricsListen string `yaml:"metricsListen"`
	// TLS, when cert and key are set, secures both listeners. With
	// clientCA (the cluster CA), gRPC clients must present a certificate
	// signed by it, and announces answer to it (see tracker.Options.
	// RequireIdentity); /debug/peers on the HTTP listener wants one too.
	// Without clientCA, announces are not authenticated: trusted networks
	// only.
	TLS TLSConfig        `yaml:"tls"`
	Log daemon.LogConfig `yaml:"log"`
	// ShutdownGrace is how long SIGTERM waits for announces in flight.
	// Announces take microseconds; the grace only covers slow clients.
	ShutdownGrace time.Duration `yaml:"shutdownGrace"`
	// Tracker tunes announce handling; see tracker.Config.
	Tracker tracker.Config `yaml:"tracker"`
}

// TLSConfig names PEM files; see docs/certificates.md for making them.
type TLSConfig struct {
	// Cert is the tracker's certificate (a tracker certificate of the
	// cluster profile, or any server certificate its clients trust).
	Cert string `yaml:"cert"`
	// Key is Cert's private key.
	Key string `yaml:"key"`
	// ClientCA is the cluster CA, or a bundle of the old and new CA while
	// rotating: it turns on mTLS. Empty: no client certificates.
	ClientCA string `yaml:"clientCA"`
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
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("config: TLS needs both cert and key")
	}
	if c.TLS.ClientCA != "" && c.TLS.Cert == "" {
		return errors.New("config: tls.clientCA needs tls.cert and tls.key")
	}
	if c.ShutdownGrace <= 0 {
		return errors.New("config: shutdownGrace must be positive")
	}
	return c.Tracker.Validate()
}

// tlsConfig returns the server TLS configuration, or nil for plaintext.
func (t TLSConfig) tlsConfig() (*tls.Config, error) {
	if t.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("loading TLS key pair: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCA != "" {
		pem, err := os.ReadFile(t.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("reading client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s holds no PEM certificate", t.ClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
