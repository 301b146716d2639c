package seeder

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// testCA is a cluster CA whose files live in dir.
type testCA struct {
	*testpki.CA
	dir string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca := &testCA{CA: testpki.NewCA(t, "shoal test cluster CA"), dir: t.TempDir()}
	testpki.WriteFile(t, ca.dir, "ca.pem", ca.PEM)
	return ca
}

// issue writes a cluster certificate for role and id (server and client
// use) and its key, returning their paths.
func (ca *testCA) issue(t *testing.T, role auth.Role, id string) (certPath, keyPath string) {
	t.Helper()
	cert, key := ca.IssuePeer(t, role, id)
	return testpki.WriteFile(t, ca.dir, id+".pem", cert), testpki.WriteFile(t, ca.dir, id+"-key.pem", key)
}

// With a cluster CA, the seeder requires client certificates: a client
// with one signed by the CA gets metainfo; one without a certificate, one
// with a certificate from another CA, and a plaintext client do not.
func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	serverCert, serverKey := ca.issue(t, auth.RoleOrigin, "origin-1")
	clientCert, clientKey := ca.issue(t, auth.RoleAgent, "agent-1")
	d := inmemory.New()
	dg := putBlob(t, d, []byte("only for the cluster"))
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) {
		c.TLS = TLSConfig{Cert: serverCert, Key: serverKey, CA: filepath.Join(ca.dir, "ca.pem")}
	})

	call := func(opt grpc.DialOption) error {
		conn, err := grpc.NewClient(s.addr, opt)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = peerpb.NewPeerClient(conn).GetMetainfo(withCapability(t, ctx, clusterKey(), dg), &peerpb.GetMetainfoRequest{Digest: dg.String()})
		return err
	}
	good, err := DialOption(TLSConfig{Cert: clientCert, Key: clientKey, CA: filepath.Join(ca.dir, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	if err := call(good); err != nil {
		t.Fatalf("client with a cluster certificate: %v", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	noCert := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	if err := call(noCert); err == nil {
		t.Error("client without a certificate got metainfo")
	}
	other := newTestCA(t)
	otherCert, otherKey := other.issue(t, auth.RoleAgent, "outsider")
	outsider, err := DialOption(TLSConfig{Cert: otherCert, Key: otherKey, CA: filepath.Join(ca.dir, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	if err := call(outsider); err == nil {
		t.Error("client with a certificate from another CA got metainfo")
	}
	if err := call(grpc.WithTransportCredentials(insecure.NewCredentials())); err == nil {
		t.Error("plaintext client got metainfo")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	for name, c := range map[string]TLSConfig{
		"missing cert": {Cert: "/nonexistent.pem", Key: "/nonexistent-key.pem"},
	} {
		if _, err := ServerOption(c); err == nil {
			t.Errorf("%s: ServerOption succeeded", name)
		}
		if _, err := DialOption(c); err == nil {
			t.Errorf("%s: DialOption succeeded", name)
		}
	}
	cfg := DefaultConfig()
	cfg.TLS = TLSConfig{CA: "ca.pem"}
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted a CA without a certificate")
	}
	cfg.TLS = TLSConfig{Cert: "c.pem"}
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted a certificate without a key")
	}
}

// With mTLS the node is who its certificate says (its peer id in
// handshakes), and an agent is who its certificate says: a handshake
// naming another agent is refused. A node whose certificate is not an
// origin's does not start.
func TestMutualTLSIdentities(t *testing.T) {
	ca := newTestCA(t)
	caFile := filepath.Join(ca.dir, "ca.pem")
	serverCert, serverKey := ca.issue(t, auth.RoleOrigin, "origin-7")
	d := inmemory.New()
	dg := putBlob(t, d, []byte("only for the cluster"))
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) {
		c.TLS = TLSConfig{Cert: serverCert, Key: serverKey, CA: caFile}
	})
	clientCert, clientKey := ca.issue(t, auth.RoleAgent, "agent-1")
	dial, err := DialOption(TLSConfig{Cert: clientCert, Key: clientKey, CA: caFile})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.addr, dial)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	handshakeAs := func(id string) (*peerpb.Handshake, error) {
		ctx, cancel := context.WithTimeout(withCapability(t, context.Background(), clusterKey(), dg), 10*time.Second)
		defer cancel()
		st, err := peerpb.NewPeerClient(conn).Exchange(ctx)
		if err != nil {
			return nil, err
		}
		if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{Digest: dg.String(), PeerId: id}}}); err != nil {
			return nil, err
		}
		msg, err := st.Recv()
		return msg.GetHandshake(), err
	}
	hs, err := handshakeAs("agent-1")
	if err != nil || hs.GetPeerId() != "origin-7" {
		t.Fatalf("handshake as agent-1: %v, %v; want the seeder's reply as origin-7, its certificate's id", hs, err)
	}
	if _, err := handshakeAs("agent-2"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("agent-1's handshake as agent-2: %v, want PERMISSION_DENIED", err)
	}

	// A tracker's certificate, even with a valid capability, gets nothing.
	trackerCert, trackerKey := ca.issue(t, auth.RoleTracker, "tracker-1")
	tdial, err := DialOption(TLSConfig{Cert: trackerCert, Key: trackerKey, CA: caFile})
	if err != nil {
		t.Fatal(err)
	}
	tconn, err := grpc.NewClient(s.addr, tdial)
	if err != nil {
		t.Fatal(err)
	}
	defer tconn.Close()
	ctx, cancel := context.WithTimeout(withCapability(t, context.Background(), clusterKey(), dg), 10*time.Second)
	defer cancel()
	if _, err := peerpb.NewPeerClient(tconn).GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: dg.String()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("GetMetainfo with a tracker certificate and a valid capability: %v, want PERMISSION_DENIED", err)
	}

	agentCert, agentKey := ca.issue(t, auth.RoleAgent, "not-an-origin")
	cfg := DefaultConfig()
	cfg.CacheDir = t.TempDir()
	cfg.TLS = TLSConfig{Cert: agentCert, Key: agentKey, CA: caFile}
	if _, err := New(cfg, d, Options{Key: clusterKey(), Log: testLogger(t)}); err == nil || !strings.Contains(err.Error(), "shoal://origin/") {
		t.Fatalf("New with an agent certificate under mTLS: %v, want an error asking for an origin certificate", err)
	}
}
