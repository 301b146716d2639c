// Command peer-agent runs Shoal's per-host agent: a registry mirror that
// dockerd (registry-mirrors) and containerd (hosts.toml) pull from, which
// fetches blobs piece by piece from other agents and origin seeders and
// serves the pieces it holds to other agents.
//
//	peer-agent --origin https://registry.example.com --tracker tracker-1:7001,tracker-2:7001
//	peer-agent --origin https://registry.example.com --tracker tracker-1:7001,tracker-2:7001 \
//	    --cache-dir /var/cache/shoal-agent --cache-quota 50GiB --advertise-addr 10.0.0.9:7002
//	peer-agent --config /etc/shoal/peer-agent.yaml
//
// The origin's seeders are learned from the origin, and the peer address
// announced is found from the route to the tracker (docs/agent.md).
//
// See docs/agent.md and deploy/peer-agent.yaml.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/pkg/peer/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	daemon.Exit("peer-agent", run(ctx, os.Args[1:]))
}

// about is --help's text above the flags.
const about = `The per-host registry mirror dockerd and containerd pull from: blobs come piece
by piece from other agents and origin seeders, manifests from the origin.
Reference of the config file: docs/config-reference.md; guide: docs/agent.md.

  peer-agent --origin https://registry.example.com --tracker tracker-1:7001,tracker-2:7001
  peer-agent --config /etc/shoal/peer-agent.yaml`

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	log, err := cfg.Log.Logger(os.Stderr)
	if err != nil {
		return err
	}
	// agent.Listen locks the cache directory: one agent per piece store.
	log.Info("piece store", "dir", cfg.CacheDir, "quota", cfg.CacheQuota)
	a, err := agent.Listen(cfg, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// defaultConfig is the agent's defaults with the cache directory for the
// user running it: /var/cache/shoal-agent for root, otherwise
// $XDG_CACHE_HOME/shoal/agent (~/.cache/shoal/agent).
func defaultConfig(dirs daemon.Dirs) agent.Config {
	cfg := agent.DefaultConfig()
	cfg.CacheDir = dirs.Cache(cfg.CacheDir, "agent")
	return cfg
}

// parseConfig reads the config file, if any, then applies the flags given
// on the command line over it.
func parseConfig(args []string) (agent.Config, error) {
	cfg := defaultConfig(daemon.DefaultDirs())
	fs := flag.NewFlagSet("peer-agent", flag.ContinueOnError)
	configPath := fs.String("config", "", "YAML config file (flags given on the command line override it)")
	listen := fs.String("listen", "", "mirror HTTP address, also /metrics /healthz /readyz (default 127.0.0.1:5050)")
	peerListen := fs.String("peer-listen", "", "gRPC address other agents fetch pieces from (default :7002, every interface)")
	advertise := fs.String("advertise-addr", "", "peer address announced to the trackers (default: this host's address on the route to the first tracker, with the --peer-listen port; or the --peer-listen address when it names one)")
	origin := fs.String("origin", "", "base URL of the origin's registry API (required)")
	seeders := fs.String("origin-seeders", "", "comma-separated gRPC addresses of origin seeders (default: learned from the origin, which lists them on its /v2/ answer)")
	trackers := fs.String("tracker", "", "comma-separated tracker gRPC addresses (the same list on every agent)")
	var originKeys listFlag
	fs.Var(&originKeys, "origin-key", "PEM file of the origin's public key(s) that verify capabilities and metainfo; repeatable (default: fetched from the origin's /shoal/v1/keys)")
	cacheDir := fs.String("cache-dir", "", "piece store directory, one per agent (default /var/cache/shoal-agent as root, else ~/.cache/shoal/agent)")
	var quota, ingress, egress agent.ByteSize
	fs.Var(&quota, "cache-quota", "piece store size limit, e.g. 50GiB (default 20GiB)")
	fs.Var(&ingress, "ingress-limit", "bytes/s received from peers and seeders, e.g. 100MB; 0 = unlimited")
	fs.Var(&egress, "egress-limit", "bytes/s sent to peers, e.g. 100MB; 0 = unlimited")
	peerID := fs.String("peer-id", "", "peer id announced (default: the certificate's with mTLS, else hostname-random)")
	locality := fs.String("locality", "", "locality label (zone, rack) sent to the tracker")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	logFormat := fs.String("log-format", "", "text or json (default text)")
	if err := daemon.Parse(fs, about, args, os.Stdout); err != nil {
		return cfg, err
	}
	if *configPath != "" {
		if err := loadConfig(*configPath, &cfg); err != nil {
			return cfg, err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	str := func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
	list := func(name string, dst *[]string, v string) {
		if set[name] {
			*dst = splitList(v)
		}
	}
	size := func(name string, dst *agent.ByteSize, v agent.ByteSize) {
		if set[name] {
			*dst = v
		}
	}
	str("listen", &cfg.Listen, *listen)
	str("peer-listen", &cfg.PeerListen, *peerListen)
	str("advertise-addr", &cfg.AdvertiseAddr, *advertise)
	str("origin", &cfg.Origin, *origin)
	list("origin-seeders", &cfg.OriginSeeders, *seeders)
	list("tracker", &cfg.Tracker.Trackers, *trackers)
	if set["origin-key"] {
		cfg.Swarm.OriginKeys = originKeys
	}
	str("cache-dir", &cfg.CacheDir, *cacheDir)
	size("cache-quota", &cfg.CacheQuota, quota)
	size("ingress-limit", &cfg.IngressLimit, ingress)
	size("egress-limit", &cfg.EgressLimit, egress)
	str("peer-id", &cfg.Swarm.PeerID, *peerID)
	str("locality", &cfg.Swarm.Locality, *locality)
	str("log-level", &cfg.Log.Level, *logLevel)
	str("log-format", &cfg.Log.Format, *logFormat)
	return cfg, cfg.Validate()
}

// loadConfig overlays the YAML file at path on cfg.
func loadConfig(path string, cfg *agent.Config) error { return daemon.LoadYAML(path, cfg) }

// listFlag is a flag that may be given several times, each value also a
// comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, splitList(v)...)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
