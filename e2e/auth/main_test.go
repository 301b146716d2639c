// Package auth_test tries to get around Shoal's access control with real
// processes: an origin running with an auth config in the mission's shape
// (path1/** public, path2/** only for some users, pushes only from one
// machine), a tracker, and a peer-agent in front of the origin. Every
// attempt must be refused with the status, OCI error code and challenge a
// registry client expects, and must leak nothing: no byte of a private
// manifest or blob, no digest, and the same answer whether or not the
// private content exists.
//
// One origin, tracker and agent are shared by the package's tests (started
// by the first test that needs them, stopped by TestMain), with fixtures
// pushed once; tests that stop the origin restart it before they end.
package auth_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// Users of the htpasswd file and what the rules (authConfig) let them do.
var passwords = map[string]string{
	"alice":   "alice-pw-4f1c", // pull path2/** by name
	"carol":   "carol-pw-9b2e", // pull path2/** through group readers
	"bob":     "bob-pw-71aa",   // authenticated: pull and push scratch/**, nothing of path2
	"mallory": "mallory-pw-0d", // denied path2/** by a deny rule
	"ci":      "ci-pw-5e33",    // pull and push everything, only from 127.0.0.2
	"admin":   "admin-pw-c8d0", // pull and delete everything, the admin API
}

// pushAddr is the one machine user ci may push from.
const pushAddr = "127.0.0.2"

// authConfig is the origin's --auth-config (%s: the htpasswd path). The
// deny rule comes first because the first matching rule decides.
const authConfig = `htpasswd: %s
groups:
  readers: [carol]
rules:
  - repositories: ["path2/**"]
    subjects: [user:mallory]
    actions: [pull, push, delete]
    effect: deny
  - repositories: ["**"]
    subjects: [user:ci]
    machines: ["cidr:` + pushAddr + `/32"]
    actions: [pull, push]
  - repositories: ["**"]
    subjects: [user:admin]
    actions: [pull, delete]
  - repositories: ["*"]
    subjects: [user:admin]
    actions: [admin]
  - repositories: ["path1/**"]
    subjects: [anonymous]
    actions: [pull]
  - repositories: ["path2/**"]
    subjects: [user:alice, group:readers]
    actions: [pull]
  - repositories: ["scratch/**"]
    subjects: [authenticated]
    actions: [pull, push]
`

// env is the shared setup.
type env struct {
	dir     string
	key     *auth.Key // the origin's signing key: the test's own copy
	tracker *testenv.TrackerServer
	origin  *testenv.SeedingOriginServer
	agent   *testenv.AgentServer
	// procs are the servers in start order.
	procs []*testenv.Process

	// public is path1/app:v1; private is path2/app:v1 (with a referrer),
	// other is path2/other:v1.
	public, private, other *image
}

var shared testenv.Shared[*env]

// mtlsShared (mtls_test.go) is the mTLS cluster, stopped after this one.
func TestMain(m *testing.M) {
	code := shared.Main(m, "e2e/auth", (*env).stop)
	os.Exit(mtlsShared.After(code, "e2e/auth", (*mtlsEnv).stop))
}

// setup returns the shared setup, starting it on first use. A binary that
// does not build yet is Unavailable (skipped outside CI); anything else
// that fails to start fails every test that needs it.
func setup(t *testing.T) *env {
	t.Helper()
	origin := testenv.Binary(t, "origin")
	tracker := testenv.Binary(t, "tracker")
	agent := testenv.Binary(t, "peer-agent")
	return shared.Get(t, "the shared origin (with --auth-config), tracker and agent", func() (*env, error) {
		return start(origin, tracker, agent)
	})
}

func start(originBin, trackerBin, agentBin string) (e *env, err error) {
	// Not the test's context: the setup outlives the first test.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "shoal-e2e-auth-")
	if err != nil {
		return nil, err
	}
	e = &env{dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.stop())
		}
	}()
	for _, d := range []string{"tracker", "origin", "agent", "storage"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return e, err
		}
	}
	storage := filepath.Join(dir, "storage")
	config, err := e.writeAuth(storage)
	if err != nil {
		return e, err
	}

	if e.tracker, err = testenv.StartTracker(ctx, testenv.TrackerOptions{Binary: trackerBin, Dir: filepath.Join(dir, "tracker")}); err != nil {
		return e, err
	}
	e.procs = append(e.procs, e.tracker.Process)
	if e.origin, err = testenv.StartSeedingOrigin(ctx, testenv.SeedingOriginOptions{
		Binary:   originBin,
		Storage:  "file://" + storage,
		Name:     "origin-auth",
		Trackers: []string{e.tracker.GRPCAddr},
		Dir:      filepath.Join(dir, "origin"),
		Args:     []string{"--auth-config", config},
	}); err != nil {
		return e, err
	}
	e.procs = append(e.procs, e.origin.Process)
	if e.agent, err = testenv.StartAgent(ctx, testenv.AgentOptions{
		Binary:   agentBin,
		Origin:   e.origin.URL(),
		Seeders:  []string{e.origin.SeederAddr},
		Trackers: []string{e.tracker.GRPCAddr},
		Dir:      filepath.Join(dir, "agent"),
	}); err != nil {
		return e, err
	}
	e.procs = append(e.procs, e.agent.Process)

	if err := e.pushFixtures(ctx); err != nil {
		return e, fmt.Errorf("pushing the fixtures as user ci from %s: %w", pushAddr, err)
	}
	return e, nil
}

// writeAuth plants the signing key in storage (e.key, the test's copy)
// and writes the users and the rules to e.dir; it returns the origin's
// --auth-config file.
func (e *env) writeAuth(storage string) (string, error) {
	var err error
	if e.key, err = plantSigningKey(storage); err != nil {
		return "", err
	}
	htpasswd := filepath.Join(e.dir, "htpasswd")
	if err := testenv.WriteHtpasswd(htpasswd, passwords); err != nil {
		return "", err
	}
	config := filepath.Join(e.dir, "auth.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, authConfig, htpasswd), 0o644); err != nil {
		return "", err
	}
	return config, nil
}

// plantSigningKey generates the origin cluster's signing key and stores it
// where an origin on this storage loads it from (auth.KeyPath), so that
// the test holds a copy to forge tokens with: the only difference between
// a forged token and an accepted one is then the one the test makes.
func plantSigningKey(storageDir string) (*auth.Key, error) {
	k, err := auth.GenerateKey()
	if err != nil {
		return nil, err
	}
	pem, err := k.MarshalPEM()
	if err != nil {
		return nil, err
	}
	p := filepath.Join(storageDir, filepath.FromSlash(auth.KeyPath))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p, pem, 0o600); err != nil {
		return nil, fmt.Errorf("planting the signing key: %w", err)
	}
	return k, nil
}

// stop stops everything started, in reverse order, and removes the
// directory unless KEEP_E2E_DIR is set.
func (e *env) stop() error {
	err := testenv.StopAll(e.procs)
	testenv.RemoveDir("e2e/auth", e.dir)
	return err
}
