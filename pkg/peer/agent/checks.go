package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/internal/peerwire"
)

// The checks behind /readyz and the start-up warning. Each names what
// keeps P2P from working, so that an agent that can only proxy the origin
// says so instead of quietly doing it.
const (
	checkServing   = "serving"
	checkOrigin    = "origin"
	checkSeeders   = "seeders"
	checkTracker   = "tracker"
	checkAdvertise = "advertise"
	checkTLS       = "tls"
)

// checkUserAgent tells the agent's own /v2/ requests apart in the
// origin's logs from the pulls it relays.
const checkUserAgent = "shoal-peer-agent (seeders and readiness check)"

// problem is one reason P2P cannot work, and what to do about it.
type problem struct {
	Check  string `json:"check"`
	Reason string `json:"reason"`
	Fix    string `json:"fix,omitempty"`
}

// readiness is /readyz's JSON body.
type readiness struct {
	// Ready is the status: 200 when true, 503 when false. False before the
	// first round of checks, during shutdown, and while the origin cannot
	// be reached (new pulls fail then; cached content is still served).
	Ready bool `json:"ready"`
	// P2P is true when nothing keeps pieces from coming from other agents
	// and the origin seeders: no problem at all.
	P2P bool `json:"p2p"`
	// Seeders are the origin seeders in use, configured or learned.
	Seeders []string `json:"seeders"`
	// Advertise is the peer address announced to the trackers.
	Advertise string    `json:"advertise"`
	Problems  []problem `json:"problems"`
}

// checker asks the origin for its seeders and checks that the origin,
// the seeders and the trackers answer, every interval. Its last round is
// what /readyz reports.
type checker struct {
	origin string
	client *http.Client
	// originTimeout bounds the origin's answer; dialTimeout a connection
	// to a seeder or a tracker.
	originTimeout time.Duration
	dialTimeout   time.Duration
	// configured are the seeders given by configuration; empty, they are
	// learned from the origin's SeedersHeader.
	configured []string
	trackers   []string
	// tls is what the agent's gRPC connections to seeders and trackers
	// use; set, a check completes a TLS handshake with it, so that a
	// certificate or CA mismatch shows at start and not at the first pull.
	// Nil: plaintext, a TCP connection is the check.
	tls       *tls.Config
	advertise advertised
	// setSeeders hands a changed seeder list to the swarm.
	setSeeders func([]string)
	log        *slog.Logger
	problems   *prometheus.GaugeVec
	seederN    prometheus.Gauge

	mu      sync.Mutex
	seeders []string
	last    readiness
	done    bool // a round has finished
}

func newChecker(c *checker, reg prometheus.Registerer) *checker {
	c.seeders = slices.Clone(c.configured)
	c.problems = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "shoal_agent_problems",
		Help: "1 while the check named (origin, seeders, tracker, advertise, tls) reports what keeps P2P from working (see /readyz), else 0.",
	}, []string{"check"})
	c.seederN = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "shoal_agent_origin_seeders",
		Help: "Origin seeders the agent takes metainfo from, configured or learned from the origin.",
	})
	reg.MustRegister(c.problems, c.seederN)
	for _, name := range checkNamesAll {
		c.problems.WithLabelValues(name)
	}
	return c
}

// run checks at once, then every interval, until ctx ends.
func (c *checker) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		c.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// status returns the last round's result; before the first, not ready.
func (c *checker) status() readiness {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		return readiness{Seeders: slices.Clone(c.seeders), Advertise: c.advertise.Addr, Problems: []problem{{
			Check: checkServing, Reason: "the start-up checks of the origin, seeders and trackers have not finished",
		}}}
	}
	r := c.last
	r.Problems = slices.Clone(r.Problems)
	return r
}

// round runs every check once, records the result and logs what changed.
func (c *checker) round(ctx context.Context) {
	var ps []problem
	reachable, learned, err := c.askOrigin(ctx)
	if err != nil {
		ps = append(ps, problem{Check: checkOrigin,
			Reason: fmt.Sprintf("the origin registry %s cannot be reached: %v", c.origin, err),
			Fix:    "check --origin and that the registry runs and is reachable from this host; meanwhile only manifests and blobs already cached are served"})
	}
	c.mu.Lock()
	prevSeeders := c.seeders
	if len(c.configured) == 0 && reachable {
		c.seeders = learned
	}
	seeders := slices.Clone(c.seeders)
	c.mu.Unlock()
	if !slices.Equal(prevSeeders, seeders) {
		c.setSeeders(seeders)
		c.log.Info("origin seeders learned from the origin", "seeders", seeders, "origin", c.origin)
	}
	c.seederN.Set(float64(len(seeders)))
	seederTLS, p := c.checkSeeders(ctx, seeders, reachable)
	if p != nil {
		ps = append(ps, *p)
	}
	trackerTLS, p := c.checkTrackers(ctx)
	if p != nil {
		ps = append(ps, *p)
	}
	if p := tlsProblem(seederTLS, trackerTLS); p != nil {
		ps = append(ps, *p)
	}
	if c.advertise.Problem != nil {
		ps = append(ps, *c.advertise.Problem)
	}

	r := readiness{Ready: err == nil, P2P: len(ps) == 0, Seeders: seeders, Advertise: c.advertise.Addr, Problems: ps}
	if r.Problems == nil {
		r.Problems = []problem{}
	}
	c.mu.Lock()
	first, prev := !c.done, c.last
	c.last, c.done = r, true
	c.mu.Unlock()
	for _, name := range checkNamesAll {
		v := 0.0
		if slices.ContainsFunc(ps, func(p problem) bool { return p.Check == name }) {
			v = 1
		}
		c.problems.WithLabelValues(name).Set(v)
	}
	if !first && slices.Equal(checkNames(prev.Problems), checkNames(ps)) {
		return
	}
	if len(ps) == 0 {
		c.log.Info("P2P ready: origin, seeders and trackers answer", "seeders", seeders, "trackers", c.trackers, "advertise", c.advertise.Addr)
		return
	}
	// One line, so that it is seen: every reason, and what to do.
	reasons, fixes := make([]string, len(ps)), make([]string, 0, len(ps))
	for i, p := range ps {
		reasons[i] = p.Reason
		if p.Fix != "" {
			fixes = append(fixes, p.Fix)
		}
	}
	c.log.Warn("P2P cannot work: "+strings.Join(reasons, "; "), "fix", strings.Join(fixes, "; "), "readyz", "/readyz lists these problems")
}

// checkNamesAll are the checks with a shoal_agent_problems series.
var checkNamesAll = []string{checkOrigin, checkSeeders, checkTracker, checkAdvertise, checkTLS}

func checkNames(ps []problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Check
	}
	return out
}

// askOrigin GETs the origin's /v2/ and reads the seeders it lists.
// Any answer but a gateway error counts as reachable: a 401 asking
// anonymous clients for credentials carries the list too.
func (c *checker) askOrigin(ctx context.Context) (reachable bool, seeders []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.originTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.origin, "/")+"/v2/", nil)
	if err != nil {
		return false, nil, err
	}
	req.Header.Set("User-Agent", checkUserAgent)
	resp, err := c.client.Do(req)
	if err != nil {
		return false, nil, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return false, nil, fmt.Errorf("it answered %s", resp.Status)
	}
	seeders, bad := peerwire.ParseSeeders(resp.Header.Get(peerwire.SeedersHeader))
	if len(bad) > 0 {
		c.log.Warn("the origin lists seeder addresses no host can dial; ignored (set seeder.advertise on the origin)", "addresses", bad)
	}
	return true, seeders, nil
}

// checkSeeders reports no seeder reachable as a problem, and returns the
// seeders that answered but failed the TLS handshake.
func (c *checker) checkSeeders(ctx context.Context, seeders []string, originReachable bool) (tlsFailed []string, _ *problem) {
	if len(seeders) == 0 {
		p := &problem{Check: checkSeeders}
		switch {
		case originReachable:
			p.Reason = fmt.Sprintf("the origin %s lists no seeders (no %s header on its /v2/ answer): its seeder is off, so blobs are proxied from its registry API without P2P, cache or piece verification", c.origin, peerwire.SeedersHeader)
			p.Fix = "start the origin with --tracker (which turns its seeder on) or --seeder-listen, or give the agent --origin-seeders"
		default:
			p.Reason = "no origin seeders known: none configured and the origin could not be asked for them"
			p.Fix = "make the origin reachable (the agent asks it again every checkInterval) or give --origin-seeders"
		}
		return nil, p
	}
	failed, tlsFailed := dialAll(ctx, seeders, c.dialTimeout, c.tls)
	if len(failed) == len(seeders) {
		fix := "check --origin-seeders and that the seeders' port is open to this host"
		if len(c.configured) == 0 {
			fix = "the origin lists these addresses: set seeder.advertise on the origin nodes to an address agents reach, and open the seeder port to this host"
		}
		return tlsFailed, &problem{Check: checkSeeders, Reason: "no origin seeder can be reached: " + strings.Join(failed, "; "), Fix: fix}
	}
	return tlsFailed, nil
}

// checkTrackers reports no tracker configured or reachable as a problem,
// and returns the trackers that answered but failed the TLS handshake.
func (c *checker) checkTrackers(ctx context.Context) (tlsFailed []string, _ *problem) {
	if len(c.trackers) == 0 {
		return nil, &problem{Check: checkTracker,
			Reason: "no tracker configured: agents do not find each other, every piece comes from the origin seeders",
			Fix:    "give --tracker host:7001 (the same list on every agent)"}
	}
	failed, tlsFailed := dialAll(ctx, c.trackers, c.dialTimeout, c.tls)
	if len(failed) == len(c.trackers) {
		return tlsFailed, &problem{Check: checkTracker,
			Reason: "no tracker can be reached, so agents do not find each other: " + strings.Join(failed, "; "),
			Fix:    "check --tracker and that a tracker runs and its port is open to this host; pulls take every piece from the origin seeders meanwhile"}
	}
	return tlsFailed, nil
}

// tlsProblem names the seeders and trackers whose TLS handshake failed:
// the connections the swarm makes to them fail the same way.
func tlsProblem(seeders, trackers []string) *problem {
	if len(seeders)+len(trackers) == 0 {
		return nil
	}
	var reasons []string
	for _, s := range seeders {
		reasons = append(reasons, "seeder "+s)
	}
	for _, t := range trackers {
		reasons = append(reasons, "tracker "+t)
	}
	return &problem{Check: checkTLS,
		Reason: "the TLS handshake fails, so pieces and announces will too: " + strings.Join(reasons, "; "),
		Fix:    "tls.ca must be the CA that signed the seeders' and trackers' certificates, and theirs the CA that signed tls.cert (docs/certificates.md); certificates issued for one shared name need tls.serverName"}
}

// dialAll connects to every address at once and, with tlsCfg, completes
// a TLS handshake on each. It returns "addr: error" for those that could
// not be reached within timeout and, apart, for those whose handshake
// failed.
func dialAll(ctx context.Context, addrs []string, timeout time.Duration, tlsCfg *tls.Config) (failed, tlsFailed []string) {
	tcpErrs, tlsErrs := make([]error, len(addrs)), make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tcpErrs[i], tlsErrs[i] = probe(ctx, addr, timeout, tlsCfg)
		}()
	}
	wg.Wait()
	for i := range addrs {
		if tcpErrs[i] != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", addrs[i], tcpErrs[i]))
		}
		if tlsErrs[i] != nil {
			tlsFailed = append(tlsFailed, fmt.Sprintf("%s: %v", addrs[i], tlsErrs[i]))
		}
	}
	return failed, tlsFailed
}

// probe connects to addr and, with tlsCfg, shakes hands as the agent's
// gRPC connections do (ALPN h2, the host dialled as the name unless
// tlsCfg names one). A server that refuses the agent's certificate says
// so with an alert after a TLS 1.3 client has finished its handshake, so
// the first bytes are read too: a gRPC server sends its settings at once.
// A server that sends nothing within timeout is taken as accepting.
func probe(ctx context.Context, addr string, timeout time.Duration, tlsCfg *tls.Config) (tcpErr, tlsErr error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err, nil
	}
	defer conn.Close()
	if tlsCfg == nil {
		return nil, nil
	}
	cfg := tlsCfg.Clone()
	cfg.NextProtos = []string{"h2"}
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetReadDeadline(dl)
	}
	var b [1]byte
	if _, err := tc.Read(b[:]); err != nil {
		// crypto/tls reports an alert from the peer so, as "remote error".
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "remote error" {
			return nil, err
		}
	}
	return nil, nil
}

// serveReadyz answers /readyz: the last round of checks as JSON, 200 when
// ready and 503 when not. Not ready before serving nor once shutdown
// began, so that dockerd's supervisor (or a probe) does not send pulls
// that would be cut.
func serveReadyz(w http.ResponseWriter, c *checker, serving bool) {
	r := c.status()
	if !serving {
		r.Ready = false
		r.Problems = append([]problem{{Check: checkServing, Reason: "the agent is not serving: starting or shutting down"}}, r.Problems...)
	}
	code := http.StatusOK
	if !r.Ready {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}
