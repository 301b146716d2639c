package agent

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// testPKI is a cluster CA whose files live in dir.
type testPKI struct {
	ca  *testpki.CA
	dir string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{ca: testpki.NewCA(t, "shoal test CA"), dir: t.TempDir()}
	testpki.WriteFile(t, p.dir, "ca.pem", p.ca.PEM)
	return p
}

// tlsFor writes a cluster certificate for role and id (127.0.0.1,
// localhost) and returns the agent TLS settings naming it.
func (p *testPKI) tlsFor(t *testing.T, role auth.Role, id string) TLSConfig {
	t.Helper()
	cert, key := p.ca.IssuePeer(t, role, id)
	return TLSConfig{
		Cert: testpki.WriteFile(t, p.dir, id+".pem", cert),
		Key:  testpki.WriteFile(t, p.dir, id+"-key.pem", key),
		CA:   p.dir + "/ca.pem",
	}
}

// tlsCluster is an origin holding a layer in team/app and an origin seeder
// (certificate origin-1) serving it over mTLS.
type tlsCluster struct {
	o      *testOrigin
	layer  []byte
	layerD digest.Digest
	pki    *testPKI
	seeder *testSeeder
}

func startTLSCluster(t *testing.T, size int, seed uint64) *tlsCluster {
	t.Helper()
	c := &tlsCluster{o: startOrigin(t), layer: randomBytes(size, seed), pki: newTestPKI(t)}
	c.layerD = c.o.pushBlob("team/app", c.layer)
	serverTLS, err := c.pki.tlsFor(t, auth.RoleOrigin, "origin-1").ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	c.seeder = startSeeder(t, "origin-1", testPieceLen, false, grpc.Creds(credentials.NewTLS(serverTLS)))
	c.seeder.add(c.layer)
	return c
}

// agent starts an agent with an agent certificate for id, taking metainfo
// from seeders.
func (c *tlsCluster) agent(t *testing.T, id string, seeders []string) *testAgent {
	t.Helper()
	cfg := testConfig(t, c.o.URL, seeders, nil)
	cfg.TLS = c.pki.tlsFor(t, auth.RoleAgent, id)
	cfg.Swarm.PeerID = ""
	return startAgent(t, cfg)
}

// TestPeersUseMutualTLS: with a cluster CA, agents dial seeders and serve
// and dial each other over mTLS, known by their certificates' ids, and a
// client without a certificate gets nothing.
func TestPeersUseMutualTLS(t *testing.T) {
	cl := startTLSCluster(t, 400_000, 30)
	layer, layerD := cl.layer, cl.layerD

	b := cl.agent(t, "agent-b", []string{cl.seeder.addr})
	if got := b.PeerID(); got != "agent-b" {
		t.Fatalf("agent's peer id = %q, want its certificate's, agent-b", got)
	}
	pullBlob(t, b, "team/app", layerD)
	eventually.True(t, "b's download to complete", func() bool { return b.metric("shoal_agent_downloads_total", "result", "completed") == 1 })
	// c takes metainfo and pieces from b, over mTLS.
	c := cl.agent(t, "agent-c", []string{b.PeerAddr()})
	pullBlob(t, c, "team/app", layerD)
	if up := b.metric("shoal_agent_uploaded_bytes_total"); up != float64(len(layer)) {
		t.Errorf("b uploaded %v bytes over mTLS, want %d", up, len(layer))
	}

	// Without a client certificate, b's peer service refuses.
	cc, err := grpc.NewClient(b.PeerAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := peerpb.NewPeerClient(cc).GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: layerD.String()}); err == nil {
		t.Error("a plaintext client got metainfo from an mTLS agent")
	}
}

// With mTLS a peer is who its certificate says: a handshake claiming
// another agent's id, or an origin's, is refused, so no peer can get
// another blacklisted or its streams replaced.
func TestPeerCannotClaimAnothersID(t *testing.T) {
	cl := startTLSCluster(t, 200_000, 31)
	layerD := cl.layerD
	b := cl.agent(t, "agent-b", []string{cl.seeder.addr})
	pullBlob(t, b, "team/app", layerD)

	mallory, err := cl.pki.tlsFor(t, auth.RoleAgent, "agent-m").ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	mallory.ServerName = "localhost"
	conn, err := grpc.NewClient(b.PeerAddr(), grpc.WithTransportCredentials(credentials.NewTLS(mallory)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok, err := testKey().IssueCapability(layerD, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	handshakeAs := func(id string) error {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), auth.CapabilityMetadata, tok), 10*time.Second)
		defer cancel()
		st, err := peerpb.NewPeerClient(conn).Exchange(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{Digest: layerD.String(), PeerId: id}}}); err != nil {
			return err
		}
		msg, err := st.Recv()
		if err == nil && msg.GetHandshake() == nil {
			t.Fatalf("Exchange answered %v before a handshake", msg)
		}
		return err
	}
	for _, claim := range []string{"agent-c", "origin-1"} {
		err := handshakeAs(claim)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "agent-m") {
			t.Errorf("agent-m's handshake as %s: %v, want PERMISSION_DENIED naming its certificate", claim, err)
		}
	}
	if err := handshakeAs("agent-m"); err != nil {
		t.Errorf("agent-m's handshake as itself: %v", err)
	}
}

func TestCertPeerID(t *testing.T) {
	pki := newTestPKI(t)
	load := func(tc TLSConfig) *tls.Certificate {
		t.Helper()
		srv, err := tc.ServerConfig()
		if err != nil {
			t.Fatal(err)
		}
		return &srv.Certificates[0]
	}
	cert := load(pki.tlsFor(t, auth.RoleAgent, "node-17"))
	if id, err := certPeerID(cert, ""); err != nil || id != "node-17" {
		t.Errorf("certPeerID without a configured id = %q, %v; want node-17", id, err)
	}
	if id, err := certPeerID(cert, "node-17"); err != nil || id != "node-17" {
		t.Errorf("certPeerID with the same configured id = %q, %v; want node-17", id, err)
	}
	if _, err := certPeerID(cert, "node-18"); err == nil || !strings.Contains(err.Error(), "swarm.peerID") {
		t.Errorf("certPeerID with another configured id: %v, want an error naming swarm.peerID", err)
	}
	certPEM, keyPEM := pki.ca.Issue(t, "127.0.0.1", 9)
	legacy := TLSConfig{Cert: testpki.WriteFile(t, pki.dir, "legacy.pem", certPEM), Key: testpki.WriteFile(t, pki.dir, "legacy-key.pem", keyPEM), CA: pki.dir + "/ca.pem"}
	if _, err := certPeerID(load(legacy), ""); err == nil || !strings.Contains(err.Error(), "shoal://agent/") {
		t.Errorf("certPeerID of a certificate outside the cluster profile: %v, want an error showing the profile", err)
	}
}

// TestReadyzNamesATLSMismatch: a seeder that answers over TCP but whose
// TLS handshake with the agent fails is named in /readyz and the start-up
// WARN with the TLS error, at start rather than at the first pull. Both
// sides are checked: the agent not trusting the seeder's CA, and the
// seeder refusing the agent's certificate.
func TestReadyzNamesATLSMismatch(t *testing.T) {
	cl := startTLSCluster(t, 1000, 32)
	other := newTestPKI(t)
	// trusted is an agent certificate the seeder accepts.
	trusted := cl.pki.tlsFor(t, auth.RoleAgent, "agent-ok")
	// stranger is one of another CA.
	stranger := other.tlsFor(t, auth.RoleAgent, "agent-x")
	for _, tc := range []struct {
		name    string
		tls     TLSConfig
		wantErr string // "" for no tls problem
	}{
		{"agent with the wrong CA", stranger, "certificate signed by unknown authority"},
		{"agent certificate of another CA", TLSConfig{Cert: stranger.Cert, Key: stranger.Key, CA: trusted.CA}, "remote error: tls: "},
		{"matching CA", trusted, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, cl.o.URL, []string{cl.seeder.addr}, nil)
			cfg.TLS = tc.tls
			cfg.Swarm.PeerID = ""
			a, logs := startLoggedAgent(t, cfg)
			_, r := readyz(t, a)
			var tlsProblem *problem
			for i, p := range r.Problems {
				if p.Check == checkTLS {
					tlsProblem = &r.Problems[i]
				}
				if p.Check == checkSeeders {
					t.Errorf("/readyz reports the seeder %s unreachable; it answers, only its TLS may not match: %+v", cl.seeder.addr, p)
				}
			}
			if tc.wantErr == "" {
				if tlsProblem != nil {
					t.Errorf("/readyz reports a TLS problem with a matching CA: %+v", *tlsProblem)
				}
				return
			}
			if tlsProblem == nil || !strings.Contains(tlsProblem.Reason, "seeder "+cl.seeder.addr) ||
				!strings.Contains(tlsProblem.Reason, tc.wantErr) || tlsProblem.Fix == "" {
				t.Fatalf("/readyz problems %+v, want a %q problem naming seeder %s and the error %q, with a fix",
					r.Problems, checkTLS, cl.seeder.addr, tc.wantErr)
			}
			if n := a.metric("shoal_agent_problems", "check", checkTLS); n != 1 {
				t.Errorf("shoal_agent_problems{check=tls} = %v, want 1", n)
			}
			var warned bool
			for _, l := range logs.lines("WARN") {
				warned = warned || strings.Contains(l, "P2P cannot work") && strings.Contains(l, cl.seeder.addr) && strings.Contains(l, tc.wantErr)
			}
			if !warned {
				t.Errorf("no start-up WARN names the seeder %s and %q; WARN lines: %q", cl.seeder.addr, tc.wantErr, logs.lines("WARN"))
			}
		})
	}
}
