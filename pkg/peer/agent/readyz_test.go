package agent

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/cluster"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// readyz returns /readyz's status and body once the first round of checks
// is done (before it, the agent is not ready and says so).
func readyz(t *testing.T, a *testAgent) (int, readiness) {
	t.Helper()
	var code int
	var r readiness
	eventually.True(t, "the agent's first round of checks", func() bool {
		resp, body := a.get("GET", "/readyz")
		code = resp.StatusCode
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("/readyz Content-Type %q, want application/json: %s", ct, body)
		}
		r = readiness{}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("/readyz body is not its JSON: %v: %s", err, body)
		}
		return !slices.Contains(checkNames(r.Problems), checkServing)
	})
	return code, r
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// logBuffer collects an agent's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines(level string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, "level="+level) {
			out = append(out, l)
		}
	}
	return out
}

func startLoggedAgent(t *testing.T, cfg Config) (*testAgent, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	return startAgentLogging(t, cfg, slog.New(slog.NewTextHandler(logs, nil))), logs
}

// TestReadyzNamesWhatKeepsP2PFromWorking: an agent whose origin, seeders
// and tracker cannot be reached is not ready (503), and /readyz and one
// start-up WARN line name each part with a fix. An origin that answers
// without listing seeders makes the agent ready (pulls are proxied) but
// still not P2P, and says why.
func TestReadyzNamesWhatKeepsP2PFromWorking(t *testing.T) {
	t.Run("nothing reachable", func(t *testing.T) {
		cfg := testConfig(t, "http://"+closedAddr(t), nil, []string{closedAddr(t)})
		a, logs := startLoggedAgent(t, cfg)
		code, r := readyz(t, a)
		if code != http.StatusServiceUnavailable || r.Ready || r.P2P {
			t.Errorf("/readyz %d ready=%v p2p=%v, want 503, not ready, no P2P", code, r.Ready, r.P2P)
		}
		if got, want := checkNames(r.Problems), []string{checkOrigin, checkSeeders, checkTracker}; !slices.Equal(got, want) {
			t.Errorf("/readyz problems %v, want %v: %+v", got, want, r.Problems)
		}
		for _, p := range r.Problems {
			if p.Reason == "" || p.Fix == "" {
				t.Errorf("problem %q without a reason or a fix: %+v", p.Check, p)
			}
		}
		if n := a.metric("shoal_agent_problems", "check", checkOrigin); n != 1 {
			t.Errorf("shoal_agent_problems{check=origin} = %v, want 1", n)
		}
		var warns []string
		for _, l := range logs.lines("WARN") {
			if strings.Contains(l, "P2P cannot work") {
				warns = append(warns, l)
			}
		}
		if len(warns) != 1 || !strings.Contains(warns[0], cfg.Origin) ||
			!strings.Contains(warns[0], "fix=") || !strings.Contains(warns[0], cfg.Tracker.Trackers[0]) {
			t.Errorf("want one WARN line naming the origin and the tracker, with the fix; got %q", warns)
		}
	})
	t.Run("configured seeder unreachable", func(t *testing.T) {
		o := startOrigin(t)
		tr := startTracker(t)
		seeder := closedAddr(t)
		a := startAgent(t, testConfig(t, o.URL, []string{seeder}, []string{tr.addr}))
		code, r := readyz(t, a)
		if code != http.StatusOK || !r.Ready || r.P2P {
			t.Errorf("/readyz %d ready=%v p2p=%v, want 200 (the origin answers), no P2P", code, r.Ready, r.P2P)
		}
		if len(r.Problems) != 1 || r.Problems[0].Check != checkSeeders || !strings.Contains(r.Problems[0].Reason, seeder) {
			t.Errorf("/readyz problems %+v, want one naming the seeder %s", r.Problems, seeder)
		}
	})
	t.Run("origin without seeders", func(t *testing.T) {
		o := startOrigin(t)
		tr := startTracker(t)
		a := startAgent(t, testConfig(t, o.URL, nil, []string{tr.addr}))
		code, r := readyz(t, a)
		if code != http.StatusOK || !r.Ready || r.P2P {
			t.Errorf("/readyz %d ready=%v p2p=%v, want 200, no P2P", code, r.Ready, r.P2P)
		}
		if len(r.Problems) != 1 || r.Problems[0].Check != checkSeeders || !strings.Contains(r.Problems[0].Reason, "lists no seeders") {
			t.Errorf("/readyz problems %+v, want one saying the origin lists no seeders", r.Problems)
		}
	})
}

// TestSeedersAreLearnedFromTheOrigin: an agent given only the origin and a
// tracker learns the seeders from the Shoal-Seeders header of the origin's
// /v2/ answer — a 401, since the origin asks for credentials — is ready
// with P2P, and pulls a private blob's pieces from the learned seeder, not
// the registry API.
func TestSeedersAreLearnedFromTheOrigin(t *testing.T) {
	s, err := origin.New(inmemory.New(), origin.DefaultConfig(), testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetSigningKey(testKey(), 0)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	ccfg := cluster.DefaultConfig()
	ccfg.NodeName, ccfg.BindPort, ccfg.Meta = "origin-1", 0, seeder.addr
	members, err := cluster.Start(ccfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = members.Close(time.Second) })
	o := &testOrigin{t: t}
	// Every request needs alice's credentials, /v2/ included; the public
	// keys are public, as on an origin with access control.
	o.srv = httptest.NewServer(members.AdvertiseSeeders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); r.URL.Path != "/shoal/v1/keys" && (!ok || u != "alice" || p != "secret") {
			w.Header().Set("WWW-Authenticate", `Basic realm="shoal"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha") {
			o.blobGETs.Add(1)
		}
		s.ServeHTTP(w, r)
	})))
	t.Cleanup(o.srv.Close)
	o.URL = o.srv.URL
	layer := randomBytes(300_000, 11)
	layerD := pushBlobAs(t, o, "private/app", layer, "alice", "secret")
	seeder.add(layer)
	tr := startTracker(t)

	a := startAgent(t, testConfig(t, o.URL, nil, []string{tr.addr}))
	code, r := readyz(t, a)
	if code != http.StatusOK || !r.Ready || !r.P2P || !slices.Equal(r.Seeders, []string{seeder.addr}) {
		t.Fatalf("/readyz %d ready=%v p2p=%v seeders %v problems %+v; want 200 with P2P and the seeder %s learned from the origin",
			code, r.Ready, r.P2P, r.Seeders, r.Problems, seeder.addr)
	}
	resp, body := a.get("GET", "/v2/private/app/blobs/"+layerD.String(), "Authorization", "Basic "+basic("alice", "secret"))
	expectStatus(t, "GET of the private blob", resp, body, http.StatusOK)
	if digest.FromBytes(body) != layerD {
		t.Fatal("wrong blob content")
	}
	if n := a.metric("shoal_agent_downloaded_bytes_total", "source", "origin"); n < float64(len(layer)) {
		t.Errorf("the agent received %v bytes from origin seeders, want the layer's %d: the learned seeder was not used", n, len(layer))
	}
	if n := o.blobGETs.Load(); n != 0 {
		t.Errorf("the origin's registry API served %d blob GETs, want none (pieces from the seeder)", n)
	}
	if n := a.metric("shoal_agent_origin_seeders"); n != 1 {
		t.Errorf("shoal_agent_origin_seeders = %v, want 1", n)
	}
}

// pushBlobAs pushes content as user to the origin.
func pushBlobAs(t *testing.T, o *testOrigin, name string, content []byte, user, pass string) digest.Digest {
	t.Helper()
	d := digest.FromBytes(content)
	resp, b := o.do("POST", "/v2/"+name+"/blobs/uploads/?digest="+d.String(), content, "Authorization", "Basic "+basic(user, pass))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("pushing blob: %d %s", resp.StatusCode, b)
	}
	return d
}
