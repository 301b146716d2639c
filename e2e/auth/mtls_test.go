package auth_test

// The cases of the bypass suite that need mutual TLS, against a second
// cluster of real processes (an origin with its seeder, a tracker, two
// agents) whose certificates are made by the shoalctl binary in the
// cluster profile, shoal://<role>/<id> (docs/certificates.md). Each case
// is refused by the component under test, and a control in the same
// cluster shows that the same call with the right certificate, id or
// capability goes through, so a refusal is never a broken setup.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/proto/peerpb"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// Peer ids of the mTLS cluster's certificates. intruder is a host with a
// valid agent certificate of the cluster and no business with private
// blobs: what it attempts is what a compromised or curious host could.
const (
	originID   = "origin-1"
	agentAID   = "agent-a"
	agentBID   = "agent-b"
	intruderID = "intruder"
)

// mtlsEnv is the mTLS cluster: env's origin (seeder on mTLS, the same
// auth config and fixtures as the plain cluster), tracker (mTLS) and
// agent (agent-a), plus a second agent, agent-b.
type mtlsEnv struct {
	*env
	agentB *testenv.AgentServer
	// pki holds the cluster CA and every certificate (<id>.pem,
	// <id>-key.pem); foreign holds another CA and a certificate it issued
	// for agent-a's id.
	pki, foreign string
}

var mtlsShared testenv.Shared[*mtlsEnv]

// setupMTLS returns the mTLS cluster, starting it on first use; TestMain
// stops it.
func setupMTLS(t *testing.T) *mtlsEnv {
	t.Helper()
	bins := map[string]string{}
	for _, name := range []string{"origin", "tracker", "peer-agent", "shoalctl"} {
		bins[name] = testenv.Binary(t, name)
	}
	return mtlsShared.Get(t, "the mTLS cluster (origin with seeder, tracker, two agents)", func() (*mtlsEnv, error) {
		return startMTLS(bins)
	})
}

func startMTLS(bins map[string]string) (e *mtlsEnv, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "shoal-e2e-auth-mtls-")
	if err != nil {
		return nil, err
	}
	e = &mtlsEnv{env: &env{dir: dir}, pki: filepath.Join(dir, "pki"), foreign: filepath.Join(dir, "foreign")}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.stop())
		}
	}()
	if err := e.issueCertificates(ctx, bins["shoalctl"]); err != nil {
		return e, err
	}
	storage := filepath.Join(dir, "storage")
	authFile, err := e.writeAuth(storage)
	if err != nil {
		return e, err
	}

	if e.tracker, err = testenv.StartTracker(ctx, testenv.TrackerOptions{
		Binary: bins["tracker"],
		Dir:    filepath.Join(dir, "tracker"),
		TLS:    &testenv.TLSFiles{Cert: e.certFile("tracker-1"), Key: e.keyFile("tracker-1"), CA: e.caFile()},
	}); err != nil {
		return e, err
	}
	e.procs = append(e.procs, e.tracker.Process)

	originConfig, err := e.writeConfig("origin.yaml", fmt.Sprintf("seeder:\n  tls: %s\n", e.tlsYAML(originID)))
	if err != nil {
		return e, err
	}
	if e.origin, err = testenv.StartSeedingOrigin(ctx, testenv.SeedingOriginOptions{
		Binary:   bins["origin"],
		Storage:  "file://" + storage,
		Name:     "origin-mtls",
		Trackers: []string{e.tracker.GRPCAddr},
		Dir:      filepath.Join(dir, "origin"),
		Args:     []string{"--config", originConfig, "--auth-config", authFile},
	}); err != nil {
		return e, err
	}
	e.procs = append(e.procs, e.origin.Process)

	// agent-b never asks the origin for a piece while an agent is joined
	// or being dialed and delivering (no origin fetchers, a deferral of
	// most of the piece timeout): the positive control then shows pieces
	// moving between agents, whichever handshake comes first.
	for _, a := range []struct {
		name   string
		extra  string
		server **testenv.AgentServer
	}{
		{"a", "", &e.agent},
		{"b", "swarm: {originFetchers: 0, originDeferral: 15s}\n", &e.agentB},
	} {
		id := "agent-" + a.name
		config, err := e.writeConfig(id+".yaml", fmt.Sprintf("tls: %s\n%s", e.tlsYAML(id), a.extra))
		if err != nil {
			return e, err
		}
		// testenv names the agent's peer id agent-<name>: the
		// certificate's, the only one an mTLS agent starts with.
		if *a.server, err = testenv.StartAgent(ctx, testenv.AgentOptions{
			Binary:   bins["peer-agent"],
			Name:     a.name,
			Origin:   e.origin.URL(),
			Seeders:  []string{e.origin.SeederAddr},
			Trackers: []string{e.tracker.GRPCAddr},
			Dir:      filepath.Join(dir, "agents"),
			Args:     []string{"--config", config},
		}); err != nil {
			return e, err
		}
		e.procs = append(e.procs, (*a.server).Process)
	}

	if err := e.pushFixtures(ctx); err != nil {
		return e, fmt.Errorf("pushing the fixtures as user ci from %s: %w", pushAddr, err)
	}
	return e, nil
}

// issueCertificates makes the cluster CA and a certificate for every
// component and the intruder with `shoalctl certs`, as docs/certificates.md
// tells operators to, and another CA with a certificate for agent-a's id.
func (e *mtlsEnv) issueCertificates(ctx context.Context, shoalctl string) error {
	run := func(args ...string) error {
		out, err := exec.CommandContext(ctx, shoalctl, append([]string{"certs"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("shoalctl certs %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("init", "--dir", e.pki); err != nil {
		return err
	}
	for _, c := range []struct{ role, id string }{
		{"tracker", "tracker-1"}, {"origin", originID}, {"agent", agentAID}, {"agent", agentBID}, {"agent", intruderID},
	} {
		if err := run("issue", "--dir", e.pki, "--role", c.role, "--id", c.id, "--ip", "127.0.0.1"); err != nil {
			return err
		}
	}
	if err := run("init", "--dir", e.foreign, "--name", "Another CA", "--key", "ed25519"); err != nil {
		return err
	}
	return run("issue", "--dir", e.foreign, "--role", "agent", "--id", agentAID, "--ip", "127.0.0.1")
}

func (e *mtlsEnv) caFile() string            { return filepath.Join(e.pki, "ca.pem") }
func (e *mtlsEnv) certFile(id string) string { return filepath.Join(e.pki, id+".pem") }
func (e *mtlsEnv) keyFile(id string) string  { return filepath.Join(e.pki, id+"-key.pem") }

// tlsYAML is the tls: value of a component's config for certificate id.
func (e *mtlsEnv) tlsYAML(id string) string {
	return fmt.Sprintf("{cert: %q, key: %q, ca: %q}", e.certFile(id), e.keyFile(id), e.caFile())
}

func (e *mtlsEnv) writeConfig(name, content string) (string, error) {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		return "", fmt.Errorf("writing %s: %w", name, err)
	}
	return p, nil
}

// tlsAs is a client TLS configuration trusting the cluster CA and
// presenting the certificate issued for id (none when id is empty).
func (e *mtlsEnv) tlsAs(t *testing.T, id string) *tls.Config {
	t.Helper()
	cert, key := "", ""
	if id != "" {
		cert, key = e.certFile(id), e.keyFile(id)
	}
	cfg, err := testenv.ClientTLS(e.caFile(), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// outsider is a client the cluster must not let in whatever it presents
// on top: it has no certificate of the cluster CA.
type outsider struct {
	name  string
	creds credentials.TransportCredentials
}

func (e *mtlsEnv) outsiders(t *testing.T) []outsider {
	t.Helper()
	return []outsider{
		{"plaintext", insecure.NewCredentials()},
		{"TLS without a client certificate", credentials.NewTLS(e.tlsAs(t, ""))},
		{"a certificate for agent-a's id from another CA", credentials.NewTLS(e.foreignTLS(t))},
	}
}

// foreignTLS presents the other CA's certificate for agent-a's id. Go's
// client would send none, since the server asks for certificates of the
// cluster CA; this one sends it anyway, as an attacker's client would.
func (e *mtlsEnv) foreignTLS(t *testing.T) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(e.foreign, agentAID+".pem"), filepath.Join(e.foreign, agentAID+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.tlsAs(t, "")
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return cfg
}

// dial is a gRPC client connection to addr, closed when the test ends.
func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// peersOf asks the peer-serving components for blobs: the origin's
// seeder, and agent-a once it holds what the test pulled through it.
func (e *mtlsEnv) peersOf() []struct{ name, addr string } {
	return []struct{ name, addr string }{{"origin seeder", e.origin.SeederAddr}, {"agent-a", e.agent.PeerAddr}}
}

// pull has user (anonymous when empty) GET blob b of repo through agent
// and checks the bytes, so that the agent holds it afterwards.
func pull(t *testing.T, agent *testenv.AgentServer, repo string, b blob, user string) {
	t.Helper()
	authz := ""
	if user != "" {
		authz = basic(user)
	}
	if a := (client{addr: agent.Addr}).do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+b.digest, authz); a.status != http.StatusOK || string(a.body) != string(b.data) {
		t.Fatalf("control: %q's pull of %s through %s: %v\nwant 200 and the %d bytes pushed", user, b.digest, agent.Name, a, len(b.data))
	}
}

// TestMTLSPeersServeNothingToAClientWithoutACertificate: the seeder and an
// agent holding a private layer are asked for its metainfo and pieces by
// clients without a cluster certificate (plaintext, TLS with none, one of
// another CA), carrying the capability the origin handed alice: the
// connection or the call is refused and nothing is served. A host with a
// valid agent certificate but no capability for the layer (none, or its
// own for a public blob) gets PERMISSION_DENIED. The control: that host's
// certificate with alice's capability is served.
func TestMTLSPeersServeNothingToAClientWithoutACertificate(t *testing.T) {
	e := setupMTLS(t)
	layer := e.private.layers[0]
	d := digest.Digest(layer.digest)
	pull(t, e.agent, "path2/app", layer, "alice")
	alices := (client{addr: e.origin.Addr}).do(t, http.MethodHead, "/v2/path2/app/blobs/"+layer.digest, basic("alice")).header.Get(auth.CapabilityHeader)
	if alices == "" {
		t.Fatalf("the origin handed alice no %s with the blob she may pull", auth.CapabilityHeader)
	}
	public, err := testenv.Capability(t.Context(), e.origin.URL(), "path1/app", digest.Digest(e.public.layers[0].digest))
	if err != nil {
		t.Fatal(err)
	}

	for _, peer := range e.peersOf() {
		t.Run(peer.name, func(t *testing.T) {
			pc := peerpb.NewPeerClient(dial(t, peer.addr, credentials.NewTLS(e.tlsAs(t, intruderID))))
			if m, err := getMetainfo(t, pc, d, alices); err != nil || m.GetDigest() != layer.digest {
				t.Fatalf("control: GetMetainfo with the intruder's certificate and alice's capability: %v, %v", m, err)
			}
			if err := handshakeAs(t, pc, d, alices, intruderID); err != nil {
				t.Fatalf("control: Exchange with the intruder's certificate and alice's capability: %v", err)
			}
			for _, c := range []struct{ name, capability string }{{"no capability", ""}, {"its capability for a public blob", public}} {
				if m, err := getMetainfo(t, pc, d, c.capability); status.Code(err) != codes.PermissionDenied {
					t.Errorf("GetMetainfo with a valid agent certificate and %s: %v, %v\nwant PERMISSION_DENIED", c.name, m, err)
				}
				if err := handshakeAs(t, pc, d, c.capability, intruderID); status.Code(err) != codes.PermissionDenied {
					t.Errorf("Exchange with a valid agent certificate and %s: %v\nwant PERMISSION_DENIED before any handshake", c.name, err)
				}
			}
			for _, o := range e.outsiders(t) {
				pc := peerpb.NewPeerClient(dial(t, peer.addr, o.creds))
				m, err := getMetainfo(t, pc, d, alices)
				if err == nil || m != nil {
					t.Errorf("GetMetainfo over %s with alice's capability: %v, %v\nwant the connection or the call refused", o.name, m, err)
				}
				hsErr := handshakeAs(t, pc, d, alices, agentAID)
				if hsErr == nil {
					t.Errorf("Exchange over %s with alice's capability: the peer answered the handshake", o.name)
				}
				t.Logf("%s: GetMetainfo: %v; Exchange: %v", o.name, err, hsErr)
			}
		})
	}
}

// TestMTLSAPeerCannotClaimAnothersIdentity: a host with a valid agent
// certificate and a valid capability (for a public layer, which it may
// pull) opens Exchange streams to the seeder and to an agent holding the
// layer, its handshake naming another agent or the origin: each is
// refused with PERMISSION_DENIED, so it can neither get another peer
// blacklisted nor take its place. The control: its own id is answered.
func TestMTLSAPeerCannotClaimAnothersIdentity(t *testing.T) {
	e := setupMTLS(t)
	layer := e.public.layers[0]
	d := digest.Digest(layer.digest)
	pull(t, e.agent, "path1/app", layer, "")
	capability, err := testenv.Capability(t.Context(), e.origin.URL(), "path1/app", d)
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range e.peersOf() {
		t.Run(peer.name, func(t *testing.T) {
			pc := peerpb.NewPeerClient(dial(t, peer.addr, credentials.NewTLS(e.tlsAs(t, intruderID))))
			if err := handshakeAs(t, pc, d, capability, intruderID); err != nil {
				t.Fatalf("control: Exchange as itself: %v", err)
			}
			for _, claim := range []string{agentAID, agentBID, originID} {
				if err := handshakeAs(t, pc, d, capability, claim); status.Code(err) != codes.PermissionDenied {
					t.Errorf("Exchange with an %s certificate claiming to be %s: %v\nwant PERMISSION_DENIED", intruderID, claim, err)
				}
			}
		})
	}
}

// announcer sends announces to the tracker over one connection.
type announcer struct{ trackerpb.TrackerClient }

func (a announcer) announce(t *testing.T, req *trackerpb.AnnounceRequest) (*trackerpb.AnnounceResponse, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return a.Announce(ctx, req)
}

// TestMTLSTrackerTakesAnnouncesOnlyAsTheCertificateSays: the intruder's
// agent certificate announces to the tracker under agent-a's and the
// origin's ids, as an origin, at an address its certificate does not
// name, and tries to STOP (remove) agent-a's and the origin's entries:
// each is PERMISSION_DENIED, and the tracker's listing still has agent-a
// at its address and the origin as the only origin. Clients without a
// cluster certificate are not heard at all. The control: the intruder
// announcing (and stopping) as itself.
func TestMTLSTrackerTakesAnnouncesOnlyAsTheCertificateSays(t *testing.T) {
	e := setupMTLS(t)
	layer := e.public.layers[0]
	pull(t, e.agent, "path1/app", layer, "")
	e.waitListed(t, layer.digest, agentAID)
	e.waitListed(t, layer.digest, originID)

	tc := announcer{trackerpb.NewTrackerClient(dial(t, e.tracker.GRPCAddr, credentials.NewTLS(e.tlsAs(t, intruderID))))}
	// An address on this host that serves nothing: the entry is the
	// intruder's own, and nobody should dial it.
	const ownAddr = "127.0.0.1:9"
	resp, err := tc.announce(t, &trackerpb.AnnounceRequest{Digest: layer.digest, PeerId: intruderID, Addr: ownAddr, Event: trackerpb.Event_EVENT_STARTED})
	if err != nil {
		t.Fatalf("control: the intruder announcing as itself: %v", err)
	}
	handed := map[string]bool{}
	for _, p := range resp.GetPeers() {
		handed[p.GetPeerId()] = p.GetIsOrigin()
	}
	if origin, ok := handed[agentAID]; !ok || origin {
		t.Errorf("control: the tracker handed out %v, want %s as an agent", handed, agentAID)
	}
	if origin := handed[originID]; !origin {
		t.Errorf("control: the tracker handed out %v, want %s as an origin", handed, originID)
	}

	for _, c := range []struct {
		name string
		req  *trackerpb.AnnounceRequest
	}{
		{"under another agent's peer_id", &trackerpb.AnnounceRequest{PeerId: agentAID, Addr: ownAddr, Complete: true}},
		{"under the origin's peer_id, as an origin", &trackerpb.AnnounceRequest{PeerId: originID, Addr: ownAddr, Complete: true, IsOrigin: true}},
		{"as an origin (is_origin) with an agent certificate", &trackerpb.AnnounceRequest{PeerId: intruderID, Addr: ownAddr, Complete: true, IsOrigin: true}},
		{"at an address its certificate does not name", &trackerpb.AnnounceRequest{PeerId: intruderID, Addr: "10.9.9.9:7002", Complete: true}},
		{"STOPPED for another agent's entry", &trackerpb.AnnounceRequest{PeerId: agentAID, Addr: e.agent.PeerAddr, Event: trackerpb.Event_EVENT_STOPPED}},
		{"STOPPED for the origin's entry", &trackerpb.AnnounceRequest{PeerId: originID, Addr: e.origin.SeederAddr, IsOrigin: true, Event: trackerpb.Event_EVENT_STOPPED}},
	} {
		c.req.Digest = layer.digest
		if resp, err := tc.announce(t, c.req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("announce with an agent certificate for %s %s: %v, %v\nwant PERMISSION_DENIED", intruderID, c.name, resp, err)
		}
	}
	for _, o := range e.outsiders(t) {
		oc := announcer{trackerpb.NewTrackerClient(dial(t, e.tracker.GRPCAddr, o.creds))}
		resp, err := oc.announce(t, &trackerpb.AnnounceRequest{Digest: layer.digest, PeerId: agentAID, Addr: ownAddr, Event: trackerpb.Event_EVENT_STOPPED})
		if err == nil {
			t.Errorf("announce over %s (STOPPED for agent-a): %v\nwant the connection refused", o.name, resp)
		}
		t.Logf("announce over %s: %v", o.name, err)
	}

	listed := e.listing(t, layer.digest)
	want := map[string]peerListing{
		agentAID:   {ID: agentAID, Addr: e.agent.PeerAddr, Complete: true},
		originID:   {ID: originID, Addr: e.origin.SeederAddr, Complete: true, Origin: true},
		intruderID: {ID: intruderID, Addr: ownAddr},
	}
	for id, w := range want {
		if got, ok := listed[id]; !ok || got != w {
			t.Errorf("after the refused announces the tracker lists %s as %+v (listed: %v), want %+v", id, got, ok, w)
		}
	}
	for id, p := range listed {
		if _, ok := want[id]; !ok {
			t.Errorf("after the refused announces the tracker lists %+v, which nobody with that certificate announced", p)
		}
	}

	if _, err := tc.announce(t, &trackerpb.AnnounceRequest{Digest: layer.digest, PeerId: intruderID, Addr: ownAddr, Event: trackerpb.Event_EVENT_STOPPED}); err != nil {
		t.Fatalf("control: the intruder stopping its own entry: %v", err)
	}
	listed = e.listing(t, layer.digest)
	if _, ok := listed[intruderID]; ok {
		t.Errorf("the intruder's own STOPPED left its entry listed: %v", listed)
	}
	if _, ok := listed[agentAID]; !ok {
		t.Errorf("agent-a's entry went with the intruder's: %v", listed)
	}
}

// TestMTLSTrackerDebugPeersNeedsAClusterCertificate: the tracker's
// /debug/peers (on its HTTPS metrics port) tells which hosts hold a blob:
// 403 to a client without a certificate, refused to one of another CA,
// 200 with a cluster certificate.
func TestMTLSTrackerDebugPeersNeedsAClusterCertificate(t *testing.T) {
	e := setupMTLS(t)
	layer := e.public.layers[0]
	url := e.tracker.URL() + "/debug/peers?digest=" + layer.digest
	if code, body := e.getDebugPeers(t, url, e.tlsAs(t, "")); code != http.StatusForbidden {
		t.Errorf("GET /debug/peers without a client certificate: %d %s\nwant 403", code, body)
	}
	if code, body := e.getDebugPeers(t, url, e.foreignTLS(t)); code != 0 {
		t.Errorf("GET /debug/peers with a certificate of another CA: %d %s\nwant the TLS handshake refused", code, body)
	}
	if code, body := e.getDebugPeers(t, url, e.tlsAs(t, intruderID)); code != http.StatusOK || !json.Valid(body) {
		t.Errorf("control: GET /debug/peers with a cluster certificate: %d %s\nwant 200 and the JSON listing", code, body)
	}
}

// getDebugPeers GETs url with cfg; code 0 when no response came.
func (e *mtlsEnv) getDebugPeers(t *testing.T, url string, cfg *tls.Config) (int, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Logf("GET %s: %v", url, err)
		return 0, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp.StatusCode, b
}

// TestMTLSAnAuthorizedPullMovesPiecesBetweenAgents is the positive
// control of the mTLS cluster: alice pulls a freshly pushed private image's
// blobs through agent-a, then through agent-b, which gets the pieces from
// agent-a over mTLS (its peer-byte metrics count them, agent-a's upload
// metrics too), and the tracker lists both agents by their certificates'
// ids and the origin as the origin.
func TestMTLSAnAuthorizedPullMovesPiecesBetweenAgents(t *testing.T) {
	e := setupMTLS(t)
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	repo := uniqueName("path2/p2p")
	im, err := e.pushImage(ctx, repo, "v1", false)
	if err != nil {
		t.Fatalf("pushing %s as ci: %v", repo, err)
	}
	blobs := append([]blob{im.config}, im.layers...)
	size := 0
	for _, b := range blobs {
		pull(t, e.agent, repo, b, "alice")
		size += len(b.data)
	}
	// agent-b is to find agent-a through the tracker.
	for _, b := range blobs {
		e.waitListed(t, b.digest, agentAID)
	}

	const downloaded, uploaded = "shoal_agent_downloaded_bytes_total", "shoal_agent_uploaded_bytes_total"
	beforeB, beforeA := scrape(t, e.agentB), scrape(t, e.agent)
	for _, b := range blobs {
		pull(t, e.agentB, repo, b, "alice")
	}
	afterB, afterA := scrape(t, e.agentB), scrape(t, e.agent)
	fromPeers := afterB.Sum(downloaded, "source", "peer") - beforeB.Sum(downloaded, "source", "peer")
	fromOrigin := afterB.Sum(downloaded, "source", "origin") - beforeB.Sum(downloaded, "source", "origin")
	sent := afterA.Sum(uploaded) - beforeA.Sum(uploaded)
	t.Logf("agent-b received %.0f piece bytes from agents and %.0f from the origin for %d bytes of blobs; agent-a sent %.0f", fromPeers, fromOrigin, size, sent)
	if fromPeers < float64(size) {
		t.Errorf("agent-b received %.0f piece bytes from agents, want the %d bytes of the blobs agent-a held: pieces did not move between agents over mTLS", fromPeers, size)
	}
	if sent < float64(size) {
		t.Errorf("agent-a sent %.0f piece bytes, want the %d bytes of the blobs agent-b pulled", sent, size)
	}
	for _, b := range blobs {
		e.waitListed(t, b.digest, agentBID)
		listed := e.listing(t, b.digest)
		if o := listed[originID]; !o.Origin {
			t.Errorf("the tracker lists %v for %s, want %s as the origin", listed, b.digest, originID)
		}
		for id, p := range listed {
			if p.Origin && id != originID {
				t.Errorf("the tracker lists %+v as an origin", p)
			}
		}
	}
}

func scrape(t *testing.T, a *testenv.AgentServer) testenv.Metrics {
	t.Helper()
	m, err := testenv.ScrapeMetrics(t.Context(), a.URL()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// peerListing is an entry of the tracker's /debug/peers.
type peerListing struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Complete bool   `json:"complete"`
	Origin   bool   `json:"origin"`
}

// listing is the tracker's entries for blob d by peer id, read with
// agent-a's certificate.
func (e *mtlsEnv) listing(t *testing.T, d string) map[string]peerListing {
	t.Helper()
	code, body := e.getDebugPeers(t, e.tracker.URL()+"/debug/peers?digest="+d, e.tlsAs(t, agentAID))
	if code != http.StatusOK {
		t.Fatalf("GET /debug/peers with agent-a's certificate: %d %s", code, body)
	}
	var peers []peerListing
	if err := json.Unmarshal(body, &peers); err != nil {
		t.Fatalf("tracker /debug/peers: %v\n%s", err, body)
	}
	out := map[string]peerListing{}
	for _, p := range peers {
		out[p.ID] = p
	}
	return out
}

// waitListed waits until the tracker lists id as complete for blob d
// (agents announce a blob as they complete it; the origin as an agent
// first asks for its metainfo).
func (e *mtlsEnv) waitListed(t *testing.T, d, id string) {
	t.Helper()
	var listed map[string]peerListing
	if err := eventually.Wait(eventually.Timeout, func() bool {
		listed = e.listing(t, d)
		return listed[id].Complete
	}); err != nil {
		t.Fatalf("waiting for the tracker to list %s as complete for %s: %v; it lists %v", id, d, err, listed)
	}
}
