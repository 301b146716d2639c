package agent

import (
	"crypto/tls"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/tracker"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// startTLSTracker starts a tracker requiring cluster certificates of pki's
// CA, as a cluster with mTLS runs it.
func startTLSTracker(t *testing.T, pki *testPKI) string {
	t.Helper()
	certPEM, keyPEM := pki.ca.IssuePeer(t, auth.RoleTracker, "tracker-1")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tracker.DefaultConfig()
	ts, err := tracker.NewServer(cfg, tracker.Options{Logger: testLogger(t), RequireIdentity: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert},
		ClientCAs: pki.ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})))
	trackerpb.RegisterTrackerServer(g, ts)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// With mTLS, agents fetch each other's pieces on the piece data path (on
// by default), over TLS 1.3 with their cluster certificates.
func TestAgentsShareOverThePieceDataPathUnderMTLS(t *testing.T) {
	t.Setenv("SHOAL_SWARM_PIECE_LISTEN", "")
	cl := startTLSCluster(t, 2<<20, 31)
	tr := startTLSTracker(t, cl.pki)
	start := func(id string) *testAgent {
		cfg := testConfig(t, cl.o.URL, []string{cl.seeder.addr}, []string{tr})
		cfg.TLS = cl.pki.tlsFor(t, auth.RoleAgent, id)
		cfg.Swarm.PeerID = ""
		return startAgent(t, cfg)
	}
	a := start("agent-a")
	pullBlob(t, a, "team/app", cl.layerD)
	eventually.True(t, "agent-a's completed announce", func() bool {
		return a.metric("shoal_agent_announces_total", "event", "completed", "result", "ok") >= 1
	})
	b := start("agent-b")
	pullBlob(t, b, "team/app", cl.layerD)
	if n := b.metric("shoal_agent_piecewire_dials_total", "result", "ok"); n < 1 {
		t.Errorf("agent-b opened %v piece connections (%v failed); want one to agent-a, over TLS",
			n, b.metric("shoal_agent_piecewire_dials_total", "result", "failed"))
	}
	if got := b.metric("shoal_agent_downloaded_bytes_total", "source", "peer"); got == 0 {
		t.Errorf("agent-b got no byte from agent-a (%v from the origin); want pieces from its peer",
			b.metric("shoal_agent_downloaded_bytes_total", "source", "origin"))
	}
}
