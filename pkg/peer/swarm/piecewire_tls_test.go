package swarm

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// clusterTLS returns the peer listener's and peer connections' TLS
// configurations of a cluster member with identity role/id under ca, as
// the agent makes them from its tls keys (mTLS: client certificates of the
// CA required).
func clusterTLS(t *testing.T, ca *testpki.CA, role auth.Role, id string) (server, client *tls.Config) {
	t.Helper()
	certPEM, keyPEM := ca.IssuePeer(t, role, id)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, RootCAs: ca.Pool()}
	return server, client
}

// newTLSPieceSwarm starts a swarm with the piece data path on under mTLS,
// its certificate that of agent-under-test.
func newTLSPieceSwarm(t *testing.T, ca *testpki.CA) (*Swarm, *auth.Key) {
	t.Helper()
	server, client := clusterTLS(t, ca, auth.RoleAgent, "agent-under-test")
	cfg := DefaultConfig()
	cfg.PieceListen = "127.0.0.1:0"
	return newPieceSwarmWith(t, cfg, Options{ServerTLS: server, ClientTLS: client, RequireIdentity: true})
}

// fetchOne asks the swarm's piece server for piece 0 of m over a
// connection made with tlsConfig and returns what came, or why the
// connection failed.
func fetchOne(t *testing.T, s *Swarm, key *auth.Key, m *metainfo.Metainfo, tlsConfig *tls.Config) (piecewire.Result, error) {
	t.Helper()
	tok, err := key.IssueCapability(m.Digest, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := piecewire.Dial(context.Background(), net.JoinHostPort("127.0.0.1", s.piecePort), tlsConfig, m, tok, piecewire.ClientConfig{})
	if err != nil {
		return piecewire.Result{}, err
	}
	defer c.Close()
	if err := c.Request(0); err != nil {
		return piecewire.Result{}, err
	}
	r, ok := <-c.Results()
	if !ok {
		return piecewire.Result{}, c.Err()
	}
	return r, nil
}

func TestPieceDataPathUnderMTLSServesClusterPeersOverTLS13(t *testing.T) {
	ca := testpki.NewCA(t, "cluster")
	s, key := newTLSPieceSwarm(t, ca)
	data, m := holdPieces(t, s, 2, 0, 1)
	if s.pieceServer == nil {
		t.Fatal("no piece server under mTLS; want one serving TLS")
	}
	_, peer := clusterTLS(t, ca, auth.RoleAgent, "another-agent")
	peerTLS := newPieceTLS(nil, peer, true).dialing("127.0.0.1", "agent-under-test")
	r, err := fetchOne(t, s, key, m, peerTLS)
	if err != nil || string(r.Data) != string(data[:m.PieceSize(0)]) {
		t.Fatalf("piece 0 from a cluster agent over TLS: %v, %v; want its bytes", r, err)
	}
	if st := s.pieceServer.Stats(); st.SendfileBytes != 0 {
		t.Fatalf("%d bytes went out with sendfile on a TLS connection; want them written through TLS", st.SendfileBytes)
	}

	tls12 := peerTLS.Clone()
	tls12.MaxVersion = tls.VersionTLS12
	if _, err := fetchOne(t, s, key, m, tls12); err == nil {
		t.Fatal("a client offering at most TLS 1.2 was served; want the handshake refused (TLS 1.3 only)")
	}
}

func TestPieceDataPathUnderMTLSRefusesWhomTheStreamsRefuse(t *testing.T) {
	ca := testpki.NewCA(t, "cluster")
	s, key := newTLSPieceSwarm(t, ca)
	_, m := holdPieces(t, s, 1, 0)
	_, tracker := clusterTLS(t, ca, auth.RoleTracker, "tracker-1")
	_, stranger := clusterTLS(t, testpki.NewCA(t, "another cluster"), auth.RoleAgent, "stranger")
	stranger.RootCAs = ca.Pool() // it trusts this server; this server must not trust it
	_, peer := clusterTLS(t, ca, auth.RoleAgent, "another-agent")
	for _, c := range []struct {
		name string
		tls  *tls.Config
	}{
		{"no client certificate", &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}},
		{"a tracker's certificate", newPieceTLS(nil, tracker, true).dialing("127.0.0.1", "agent-under-test")},
		{"another CA's certificate", newPieceTLS(nil, stranger, true).dialing("127.0.0.1", "agent-under-test")},
		{"plaintext on the TLS port", nil},
		// The dialer's side: the piece port answers with the certificate
		// of another agent than the stream's peer.
		{"a piece server that is not the stream's peer", newPieceTLS(nil, peer, true).dialing("127.0.0.1", "someone-else")},
	} {
		if r, err := fetchOne(t, s, key, m, c.tls); err == nil {
			t.Errorf("%s: got %v; want the connection refused", c.name, r)
		}
	}
	if n := s.pieceServer.Stats().Pieces; n != 0 {
		t.Fatalf("%d pieces sent to connections that should have been refused", n)
	}
}

func TestPieceDataPathIsNeverPlaintextWhenIdentitiesAreRequired(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PieceListen = "127.0.0.1:0"
	s, _ := newPieceSwarmWith(t, cfg, Options{RequireIdentity: true})
	if s.pieceServer != nil || s.piecePort != "" {
		t.Fatalf("piece server on port %q with RequireIdentity and no TLS configurations; want none (pieces on the mTLS streams)", s.piecePort)
	}
}
