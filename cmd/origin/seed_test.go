package main

import (
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/shoal-dev/shoal/pkg/origin/seeder"
)

func TestSeederFlagsOverrideConfig(t *testing.T) {
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	apply := seederFlags(fs)
	if err := fs.Parse([]string{
		"--seeder-listen", "127.0.0.1:7002", "--tracker", "t1:7001, t2:7001", "--cluster-bind", "10.1.2.3:7946",
		"--cluster-join", "o1:7946,o2:7946", "--cluster-name", "o3", "--cache-dir", "/srv/cache",
	}); err != nil {
		t.Fatal(err)
	}
	cfg := seeder.DefaultConfig()
	cfg.CacheBytes = 123 // from a config file: flags leave it alone
	if err := apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7002" || !slices.Equal(cfg.Tracker.Trackers, []string{"t1:7001", "t2:7001"}) ||
		cfg.Cluster.BindAddr != "10.1.2.3" || cfg.Cluster.BindPort != 7946 ||
		!slices.Equal(cfg.Cluster.Join, []string{"o1:7946", "o2:7946"}) || cfg.Cluster.NodeName != "o3" ||
		cfg.CacheDir != "/srv/cache" || cfg.CacheBytes != 123 {
		t.Fatalf("config after flags = %+v", cfg)
	}

	fs = flag.NewFlagSet("origin", flag.ContinueOnError)
	apply = seederFlags(fs)
	if err := fs.Parse([]string{"--cluster-bind", "nocolon"}); err != nil {
		t.Fatal(err)
	}
	if err := apply(&cfg); err == nil {
		t.Error("--cluster-bind without a port accepted")
	}
}

func TestSeederConfigSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "origin.yaml")
	if err := os.WriteFile(path, []byte(`
seeder:
  listen: 0.0.0.0:7002
  cacheBytes: 1073741824
  egressBytesPerSecond: 125000000
  tls: {cert: c.pem, key: k.pem, ca: ca.pem}
  tracker: {trackers: [t1:7001], timeout: 1s}
  cluster: {nodeName: o1, bindAddr: 0.0.0.0, join: [o2:7946], probeInterval: 2s}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if err := cfg.load(path); err != nil {
		t.Fatal(err)
	}
	s := cfg.Seeder
	if s.Listen != "0.0.0.0:7002" || s.CacheBytes != 1<<30 || s.EgressBytesPerSecond != 125000000 || s.TLS.CA != "ca.pem" ||
		s.Tracker.Trackers[0] != "t1:7001" || s.Tracker.Timeout.String() != "1s" || s.Cluster.NodeName != "o1" ||
		s.Cluster.ProbeInterval.String() != "2s" || s.Replicas != 2 || s.Cluster.SuspicionMult == 0 {
		t.Fatalf("seeder section decoded as %+v", s)
	}
}

func TestAdvertiseAddr(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name      string
		mut       func(*seeder.Config)
		listening string
		want      string
	}{
		{"explicit", func(c *seeder.Config) { c.Advertise = "seed.example:7002" }, "0.0.0.0:7002", "seed.example:7002"},
		{"specified host", nil, "10.0.0.5:7002", "10.0.0.5:7002"},
		{"cluster advertise", func(c *seeder.Config) { c.Cluster.AdvertiseAddr = "10.0.0.6" }, "0.0.0.0:7002", "10.0.0.6:7002"},
		{"cluster bind", func(c *seeder.Config) { c.Cluster.BindAddr = "10.0.0.7" }, "[::]:7002", "10.0.0.7:7002"},
	} {
		cfg := seeder.DefaultConfig()
		if tc.mut != nil {
			tc.mut(&cfg)
		}
		got, err := advertiseAddr(cfg, tc.listening, log)
		if err != nil || got != tc.want {
			t.Errorf("%s: advertiseAddr = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	// Loopback cluster bind with a wildcard listener: not advertised as
	// loopback (other hosts could not dial it).
	got, err := advertiseAddr(seeder.DefaultConfig(), "0.0.0.0:7002", log)
	if err != nil || got == "127.0.0.1:7002" {
		t.Errorf("advertiseAddr with loopback cluster bind = %q, %v; want a non-loopback address", got, err)
	}
}
