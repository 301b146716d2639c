// Package soak_test runs a whole Shoal deployment under load while things
// break, as issue 13 asks: an origin, a tracker and four agents, each a
// separate process; 500 concurrent blob pulls through the agents and 20
// concurrent chunked pushes to the origin, while a fault injector kills an
// agent (and starts it again), takes the origin's storage away for seconds,
// stalls it for seconds (every call hangs, as on a hung mount) and restarts
// the tracker.
//
// It asserts correctness, never timing: every pull that completed has the
// right bytes, every push either completed (manifest and blobs readable and
// right) or left nothing half-visible, every blob in storage matches its
// digest, every agent and the origin serve again once the faults are over,
// memory returns near its baseline, and no process panicked. The load and
// the faults advance on conditions (pulls and pushes completed, the origin
// reporting its storage down), so a slow machine makes the test slower,
// not flaky.
package soak_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
)

const (
	// pullers and pushers are the concurrent pulls and pushes.
	pullers = 500
	pushers = 20
	agents  = 4
	// milestone is how many pulls (and, divided by 25, pushes) must
	// complete in each phase of load before the next fault.
	milestone = 500
	// requestTimeout bounds one pull or push request. A pull or push
	// that takes longer is counted as hung and reported; 60s is far
	// past anything these few-MiB blobs need even on a loaded machine.
	requestTimeout = 60 * time.Second
	// phaseTimeout bounds the wait for one phase's milestone: the load
	// must make progress, faults or not.
	phaseTimeout = 2 * time.Minute
	// outageHold is how long storage stays away once the origin has
	// noticed: long enough for pushes, pulls and readiness probes to run
	// into it, short enough for the time budget.
	outageHold = 3 * time.Second
)

// originConfig turns scheduled GC off, so that nothing but the test's
// requests changes what storage holds between the load and the checks, and
// gives up on a storage call after 5s instead of 10s, so that the stall
// fits the time budget (and still far from what a call takes through FUSE
// on a loaded machine).
const originConfig = "gc:\n  interval: 0s\nregistry:\n  storageTimeout: 5s\n"

// layerSizes are the blobs pulled: small, a power of two, and one that
// is neither, whose last piece is short. Small, so that the load's bytes
// (thousands of pulls) stay within what two cores hash in the time.
var layerSizes = []int{100 << 10, 1 << 20, 5<<20 + 12345}

type deployment struct {
	t     *testing.T
	began time.Time
	// phase names the fault in force (or the lack of one), recorded
	// with every failure so that failures outside faults stand out.
	phase   atomic.Value
	breaker [2]float64 // the origin's storage timeouts and refusals at the last setPhase
	dir     string
	storage string // the origin's storage root
	// storageDisk is the directory on disk that holds storage: storage
	// itself, or the directory stall serves it from.
	storageDisk string
	// stall serves storage through a file system that can be made to
	// hang; nil when none could be mounted, for stallUnavailable.
	stall            *stallFS
	stallUnavailable error
	tracker          *testenv.TrackerServer
	origin           *testenv.SeedingOriginServer
	agents           []*testenv.AgentServer
	layers           []blob
	http             *http.Client
}

type blob struct {
	repo   string
	digest digest.Digest
	size   int64
}

func TestSoakPullsAndPushesSurviveFaults(t *testing.T) {
	d := start(t)
	d.logf("started an origin, a tracker and %d agents", agents)
	for i, size := range layerSizes {
		d.layers = append(d.layers, d.pushBlob("soak/base", randomBytes(uint64(i), size)))
	}

	// Warm up, so the baseline includes what every process allocates
	// once (piece caches, connection pools, the runtime's first heap):
	// every layer through every agent, and a push.
	var warm sync.WaitGroup
	for a := range d.agents {
		for _, l := range d.layers {
			warm.Go(func() {
				if r := d.pull(t.Context(), a, l); r.err != nil {
					t.Errorf("warm-up pull of %s through agent %d: %v", l.digest, a, r.err)
				}
			})
		}
	}
	warm.Wait()
	if t.Failed() {
		return
	}
	if r := (&pusher{d: d, id: -1}).push(t.Context(), 0); r.err != nil {
		t.Fatalf("warm-up push: %v", r.err)
	}
	baseline := d.rssAll()
	d.logf("RSS after warm-up: %s", baseline)

	d.setPhase("no fault")
	load := d.startLoad()
	load.waitFor("the load to start", milestone, milestone/25)
	d.logf("load running: %s", load)

	victim := agents - 1
	d.setPhase(fmt.Sprintf("agent %d killed", victim))
	d.agents[victim].Kill()
	load.waitFor("pulls through the surviving agents", milestone, 0)
	d.logf("load without agent %d: %s", victim, load)
	if err := d.agents[victim].Restart(t.Context()); err != nil {
		d.dumpStacks(d.agents[victim].Process)
		t.Fatalf("starting agent %d again: %v", victim, err)
	}
	d.setPhase(fmt.Sprintf("agent %d started again", victim))

	d.storageOutage()
	d.storageStall()

	d.setPhase("tracker stopped")
	if err := d.tracker.Stop(testenv.DefaultStopTimeout); err != nil {
		t.Errorf("stopping the tracker: %v", err)
	}
	if err := d.tracker.Restart(t.Context()); err != nil {
		t.Fatalf("starting the tracker again: %v", err)
	}
	d.setPhase("after the faults")

	// After every fault, the load goes on, through every agent.
	after := load.mark()
	load.waitFor("the load after the faults", milestone, milestone/25)
	eventually.Within(t, phaseTimeout, "every agent to complete pulls after the faults", func() bool {
		for a := range d.agents {
			if load.pulledBy[a].Load() <= after.pulledBy[a] {
				return false
			}
		}
		return true
	})
	d.logf("load after the faults: %s", load)
	load.stop()
	d.setPhase("load stopped")
	peak := d.rssAll()
	d.logf("load: %s", load)
	d.logf("RSS at the end of the load: %s", peak)

	load.checkPulls()
	d.checkPushes(load.pushes())
	d.checkStoredBlobs()
	d.checkEveryAgentServes()
	d.logf("every agent serves every layer, and a blob pushed after the faults")
	d.checkMemory(baseline, victim)
	d.checkLogs()
}

// start builds the binaries (without the race detector: the memory figures
// and the load would measure it) and starts the deployment, stopped when
// the test ends.
func start(t *testing.T) *deployment {
	t.Helper()
	w := testenv.ForTest(t)
	bin := map[string]string{}
	for _, name := range []string{"origin", "tracker", "peer-agent"} {
		b, err := w.Build(t.Context(), name, testenv.BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bin[name] = b
	}
	d := &deployment{t: t, dir: t.TempDir(), began: time.Now()}
	if testenv.Kept() {
		// KEEP_E2E_DIR: the logs and storage stay to be read after.
		dir, err := os.MkdirTemp("", "shoal-soak-")
		if err != nil {
			t.Fatal(err)
		}
		d.dir = dir
		t.Cleanup(func() { testenv.RemoveDir("e2e/soak", dir) })
	}
	d.useStallFS()
	if err := os.Mkdir(d.storage, 0o755); err != nil {
		t.Fatal(err)
	}
	// One connection pool for the whole load: 500 clients opening a
	// connection per request would run out of ephemeral ports.
	d.http = &http.Client{Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute}}
	t.Cleanup(d.http.CloseIdleConnections)

	tr, err := testenv.StartTracker(t.Context(), testenv.TrackerOptions{Binary: bin["tracker"], Dir: filepath.Join(d.dir, "tracker")})
	if err != nil {
		t.Fatal(err)
	}
	d.tracker = tr
	d.stopOnCleanup(tr.Process)

	originYAML := filepath.Join(d.dir, "origin.yaml")
	agentYAML := filepath.Join(d.dir, "agent.yaml")
	for p, s := range map[string]string{originYAML: originConfig, agentYAML: testenv.FaultAgentConfig} {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o, err := testenv.StartSeedingOrigin(t.Context(), testenv.SeedingOriginOptions{
		Binary: bin["origin"], Storage: "file://" + d.storage, Name: "origin-1",
		Trackers: []string{tr.GRPCAddr}, Dir: filepath.Join(d.dir, "origin"), Args: []string{"--config", originYAML},
	})
	if err != nil {
		t.Fatal(err)
	}
	d.origin = o
	d.stopOnCleanup(o.Process)

	d.agents = make([]*testenv.AgentServer, agents)
	errs := make([]error, agents)
	var wg sync.WaitGroup
	for i := range d.agents {
		wg.Go(func() {
			d.agents[i], errs[i] = testenv.StartAgent(t.Context(), testenv.AgentOptions{
				Binary: bin["peer-agent"], Name: strconv.Itoa(i), Origin: o.URL(), Seeders: []string{o.SeederAddr},
				Trackers: []string{tr.GRPCAddr}, Dir: filepath.Join(d.dir, "agents"), Args: []string{"--config", agentYAML},
			})
		})
	}
	wg.Wait()
	var started []*testenv.Process
	for i, a := range d.agents {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		started = append(started, a.Process)
	}
	// Registered after the origin's and tracker's, so run before them:
	// agents stop while their peers are still up.
	d.stopOnCleanup(started...)
	return d
}

// setPhase records the fault now in force, and what the origin's storage
// breaker did in the phase before (storage calls given up on after
// storageTimeout, and failed fast while storage was out): a failure in a
// phase without a fault can then be told from storage being slow.
func (d *deployment) setPhase(p string) {
	d.t.Helper()
	prev := d.currentPhase()
	d.phase.Store(p)
	if d.origin != nil {
		m, err := testenv.ScrapeMetrics(d.t.Context(), d.origin.URL()+"/metrics")
		if err == nil {
			now := [2]float64{m.Sum("shoal_origin_storage_timeouts_total"), m.Sum("shoal_origin_storage_refusals_total")}
			if now != d.breaker {
				d.logf("during %q the origin gave up on %.0f storage calls after storageTimeout and failed %.0f fast",
					prev, now[0]-d.breaker[0], now[1]-d.breaker[1])
			}
			d.breaker = now
		}
	}
	d.logf("phase: %s", p)
}

func (d *deployment) currentPhase() string {
	p, _ := d.phase.Load().(string)
	return p
}

// logf logs with the time since the test began, to see where it goes.
func (d *deployment) logf(format string, args ...any) {
	d.t.Helper()
	d.t.Logf("%6.1fs "+format, append([]any{time.Since(d.began).Seconds()}, args...)...)
}

// stopOnCleanup stops ps at once when the test ends (one by one, each
// would take its shutdown grace): each must shut down cleanly on SIGTERM,
// and its log is quoted when the test failed.
func (d *deployment) stopOnCleanup(ps ...*testenv.Process) {
	d.t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, p := range ps {
			wg.Go(func() {
				if err := p.Stop(testenv.DefaultStopTimeout); err != nil {
					d.t.Errorf("stopping %s: %v", p.Name, err)
				}
			})
		}
		wg.Wait()
		if d.t.Failed() {
			for _, p := range ps {
				d.t.Log(p.LogTail(30))
			}
		}
	})
}

// dumpStacks logs where the goroutines of this test process (the load
// and the probes) and of p are, for a failure that may be either side's
// stall: this process's grouped by stack, p's from the dump Go writes to
// its log on SIGQUIT (which ends it).
func (d *deployment) dumpStacks(p *testenv.Process) {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	d.t.Logf("goroutines of the test process (load, probes), grouped:\n%s", truncate(b.Bytes(), 24<<10))
	before, _ := os.ReadFile(p.LogPath)
	if err := unix.Kill(p.PID(), unix.SIGQUIT); err != nil {
		d.t.Logf("SIGQUIT to %s: %v", p.Name, err)
		return
	}
	var after []byte
	_ = eventually.Wait(10*time.Second, func() bool {
		after, _ = os.ReadFile(p.LogPath)
		return p.Exited()
	})
	if len(after) <= len(before) {
		return
	}
	// Only the goroutines in Shoal's code: the runtime's own say little.
	var ours [][]byte
	for _, g := range bytes.Split(after[len(before):], []byte("\n\n")) {
		if bytes.Contains(g, []byte("shoal-dev/shoal")) {
			ours = append(ours, g)
		}
	}
	d.t.Logf("goroutines of %s in Shoal's code (SIGQUIT):\n%s", p.Name, truncate(bytes.Join(ours, []byte("\n\n")), 24<<10))
}

// truncate cuts b to at most n bytes, saying so.
func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return append(b[:n:n], fmt.Sprintf("\n... (%d bytes more)", len(b)-n)...)
}

// randomBytes is size bytes of a ChaCha8 stream seeded by seed, so that a
// failure can be reproduced byte for byte.
func randomBytes(seed uint64, size int) []byte {
	var key [32]byte
	copy(key[:], strconv.FormatUint(seed, 10))
	b := make([]byte, size)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// pushBlob uploads b to repo in one request.
func (d *deployment) pushBlob(repo string, b []byte) blob {
	d.t.Helper()
	dg := digest.FromBytes(b)
	resp, err := d.http.Post(d.origin.URL()+"/v2/"+repo+"/blobs/uploads/?digest="+dg.String(), "application/octet-stream", bytes.NewReader(b))
	if err != nil {
		d.t.Fatalf("pushing a layer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		d.t.Fatalf("pushing a layer: %s", resp.Status)
	}
	return blob{repo: repo, digest: dg, size: int64(len(b))}
}

// pullResult is one blob GET through an agent.
type pullResult struct {
	agent int
	blob  blob
	bytes int64
	got   string // digest of the bytes received
	err   error  // the request failed or the body ended early
	hung  bool   // requestTimeout ran out
}

func (d *deployment) pull(ctx context.Context, agent int, l blob) (r pullResult) {
	r.agent, r.blob = agent, l
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	r.bytes, r.got, r.err = testenv.GetDigest(ctx, d.http, d.agents[agent].URL()+"/v2/"+l.repo+"/blobs/"+l.digest.String())
	r.hung = r.err != nil && ctx.Err() == context.DeadlineExceeded
	return r
}

// get answers a GET on the origin, read whole.
func (d *deployment) get(path string, hdr ...string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(d.t.Context(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.origin.URL()+path, nil)
	if err != nil {
		return 0, nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// storageOutage swaps the origin's storage directory with a file, as a
// failed mount leaves it, until the origin has noticed and outageHold more;
// then swaps it back and waits for readiness: the outage that fails calls
// (storageStall is the one that hangs them). Each swap is one atomic
// rename (RENAME_EXCHANGE): a rename away and back would leave a moment
// without either, in which the origin creates the directory afresh, and
// the one put back then does not fit.
func (d *deployment) storageOutage() {
	t := d.t
	file := d.storageDisk + ".gone"
	if err := os.WriteFile(file, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	swap := func() {
		if err := unix.Renameat2(unix.AT_FDCWD, file, unix.AT_FDCWD, d.storageDisk, unix.RENAME_EXCHANGE); err != nil {
			t.Fatalf("swapping %s and %s: %v", file, d.storageDisk, err)
		}
	}
	swap()
	d.setPhase("storage gone")
	eventually.Within(t, phaseTimeout, "the origin to notice its storage gone", func() bool {
		m, err := testenv.ScrapeMetrics(t.Context(), d.origin.URL()+"/metrics")
		return err == nil && m.Sum("shoal_origin_storage_up") == 0
	})
	// The fault's duration, not an assertion: requests keep running into
	// it meanwhile.
	time.Sleep(outageHold)
	swap()
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	ready := testenv.HTTPReady(d.origin.URL() + "/readyz")
	eventually.Within(t, phaseTimeout, "the origin to be ready again once its storage was back", func() bool {
		return ready(t.Context()) == nil
	})
	d.setPhase("storage back")
}
