package cluster

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/eventually"
)

func testConfig(name, meta string) Config {
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.BindPort = 0
	cfg.Meta = meta
	cfg.RejoinInterval = 100 * time.Millisecond
	return cfg
}

func start(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	c, err := Start(cfg, nil)
	if err != nil {
		t.Fatalf("starting %s: %v", cfg.NodeName, err)
	}
	t.Cleanup(func() { _ = c.Close(time.Second) })
	return c
}

func waitMembers(t *testing.T, c *Cluster, n int) {
	t.Helper()
	if err := eventually.Wait(eventually.Timeout, func() bool { return len(c.Members()) == n }); err != nil {
		t.Fatalf("%s sees members %v, want %d: %v", c.Self().Name, c.Members(), n, err)
	}
}

// logWatch is a log destination that hands each line to a function, which
// must be safe to call from memberlist's goroutines.
type logWatch func(line []byte)

func (w logWatch) Write(p []byte) (int, error) {
	w(p)
	return len(p), nil
}

func TestSingleNodeOwnsEverything(t *testing.T) {
	c := start(t, testConfig("solo", "127.0.0.1:7002"))
	if got := c.Members(); len(got) != 1 || got[0] != (Member{"solo", "127.0.0.1:7002"}) {
		t.Fatalf("Members() = %v, want only solo with its seeder address", got)
	}
	if got := c.Owners("sha256:abc", 2); len(got) != 1 || got[0].Name != "solo" {
		t.Fatalf("Owners() = %v, want solo", got)
	}
}

// twoNodes starts node-a and node-b (seeders at 127.0.0.1:7101 and :7102),
// b joining a, and waits until each sees both: the members returned.
func twoNodes(t *testing.T) (a, b *Cluster, members []Member) {
	t.Helper()
	a = start(t, testConfig("node-a", "127.0.0.1:7101"))
	bcfg := testConfig("node-b", "127.0.0.1:7102")
	bcfg.Join = []string{a.LocalAddr()}
	b = start(t, bcfg)
	waitMembers(t, a, 2)
	waitMembers(t, b, 2)
	return a, b, []Member{{"node-a", "127.0.0.1:7101"}, {"node-b", "127.0.0.1:7102"}}
}

func TestTwoNodesAgreeOnOwners(t *testing.T) {
	a, b, want := twoNodes(t)
	for _, c := range []*Cluster{a, b} {
		if got := c.Members(); !slices.Equal(got, want) {
			t.Fatalf("%s: Members() = %v, want %v (with each seeder address)", c.Self().Name, got, want)
		}
	}
	firsts := map[string]int{}
	for i := range 200 {
		d := fmt.Sprintf("sha256:%064x", i)
		oa, ob := a.Owners(d, 1), b.Owners(d, 1)
		if !slices.Equal(oa, ob) {
			t.Fatalf("%s: node-a says owner %v, node-b says %v", d, oa, ob)
		}
		firsts[oa[0].Name]++
	}
	if firsts["node-a"] == 0 || firsts["node-b"] == 0 {
		t.Fatalf("one node owns every blob: %v", firsts)
	}

	// A node that leaves is gone from the other's view at once (Leave
	// broadcasts), and the survivor owns everything.
	if err := b.Close(time.Second); err != nil {
		t.Fatalf("closing node-b: %v", err)
	}
	waitMembers(t, a, 1)
	if got := a.Owners("sha256:abc", 2); len(got) != 1 || got[0].Name != "node-a" {
		t.Fatalf("after node-b left, Owners() = %v, want node-a", got)
	}
}

// A node whose join list is unreachable at start works alone, and joins
// once a member appears.
func TestJoinRetriesUntilAMemberIsUp(t *testing.T) {
	a := start(t, testConfig("node-a", ""))
	addr := a.LocalAddr()
	if err := a.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	bcfg := testConfig("node-b", "")
	bcfg.Join = []string{addr}
	b := start(t, bcfg)
	if got := b.Members(); len(got) != 1 {
		t.Fatalf("with the join target down, Members() = %v, want only node-b", got)
	}
	ccfg := testConfig("node-c", "")
	ccfg.Join = []string{b.LocalAddr()}
	c := start(t, ccfg)
	waitMembers(t, b, 2)
	waitMembers(t, c, 2)
}

func TestValidate(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"bad port":       func(c *Config) { c.BindPort = 70000 },
		"zero probe":     func(c *Config) { c.ProbeInterval = 0 },
		"zero suspicion": func(c *Config) { c.SuspicionMult = 0 },
		"zero rejoin":    func(c *Config) { c.RejoinInterval = 0 },
		"long meta":      func(c *Config) { c.Meta = string(make([]byte, 1000)) },
	} {
		cfg := DefaultConfig()
		mut(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate() accepted %+v", name, cfg)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}

func writeKey(t *testing.T, key string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(p, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// With a gossip key, nodes that share it form a cluster and a node with
// another key cannot join.
func TestGossipKey(t *testing.T) {
	key := writeKey(t, base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	other := writeKey(t, base64.StdEncoding.EncodeToString([]byte("fedcba9876543210")))

	acfg := testConfig("node-a", "")
	acfg.KeyFile = key
	// memberlist logs a stream it cannot decrypt, then answers it with an
	// error: what node-a does with a join under another key.
	var refused atomic.Bool
	a, err := Start(acfg, slog.New(slog.NewTextHandler(logWatch(func(line []byte) {
		if bytes.Contains(line, []byte("no installed keys could decrypt")) {
			refused.Store(true)
		}
	}), nil)))
	if err != nil {
		t.Fatalf("starting node-a: %v", err)
	}
	t.Cleanup(func() { _ = a.Close(time.Second) })
	bcfg := testConfig("node-b", "")
	bcfg.KeyFile, bcfg.Join = key, []string{a.LocalAddr()}
	b := start(t, bcfg)
	waitMembers(t, a, 2)
	waitMembers(t, b, 2)

	ccfg := testConfig("node-c", "")
	ccfg.KeyFile, ccfg.Join = other, []string{a.LocalAddr()}
	c := start(t, ccfg)
	// Once node-a has refused node-c's join, the membership below is what
	// followed the refusal. node-c joining instead ends the wait at once,
	// and the assertions say so.
	eventually.True(t, "node-a to refuse node-c's join or node-c to join", func() bool {
		return refused.Load() || len(c.Members()) > 1 || len(a.Members()) > 2
	})
	if got := c.Members(); len(got) != 1 {
		t.Fatalf("node with another key joined: %v", got)
	}
	if got := a.Members(); len(got) != 2 {
		t.Fatalf("node-a sees %v, want node-a and node-b only", got)
	}

	for _, bad := range []string{writeKey(t, "not base64!"), writeKey(t, base64.StdEncoding.EncodeToString([]byte("short")))} {
		cfg := testConfig("node-d", "")
		cfg.KeyFile = bad
		if c, err := Start(cfg, nil); err == nil {
			_ = c.Close(time.Second)
			t.Errorf("Start accepted the bad key file %s", bad)
		}
	}
}

// Memberlist rewrites a member's record (meta, address, incarnation) in
// place whenever that member announces a newer incarnation, as it does to
// refute a suspicion on a loaded host. Members and Owners, which the
// seeder's gRPC handlers call on every request, must not read those
// records behind memberlist's lock: under -race this test fails if they do.
func TestMembersIsSafeWhileAMemberReannounces(t *testing.T) {
	a, b, want := twoNodes(t)
	done := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		for {
			select {
			case <-done:
				return
			default:
			}
			if got := a.Members(); !slices.Equal(got, want) {
				errs <- fmt.Errorf("while node-b re-announced itself, node-a's Members() = %v, want %v", got, want)
				return
			}
			_ = a.Owners("sha256:abc", 1)
		}
	}()
	// Each UpdateNode bumps node-b's incarnation and gossips an alive
	// message, which node-a applies to node-b's record; it returns once
	// the message went out.
	for range 5 {
		if err := b.ml.UpdateNode(5 * time.Second); err != nil {
			t.Fatalf("node-b re-announcing itself: %v", err)
		}
	}
	close(done)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if got := a.Members(); !slices.Equal(got, want) {
		t.Fatalf("after node-b re-announced itself, node-a's Members() = %v, want %v", got, want)
	}
}
