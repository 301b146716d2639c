package seeder

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/internal/testpki"
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

// issue writes a certificate for name (server and client use) and its key,
// returning their paths.
func (ca *testCA) issue(t *testing.T, name string, serial int64) (certPath, keyPath string) {
	t.Helper()
	cert, key := ca.Issue(t, name, serial)
	return testpki.WriteFile(t, ca.dir, name+".pem", cert), testpki.WriteFile(t, ca.dir, name+"-key.pem", key)
}

// With a cluster CA, the seeder requires client certificates: a client
// with one signed by the CA gets metainfo; one without a certificate, one
// with a certificate from another CA, and a plaintext client do not.
func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	serverCert, serverKey := ca.issue(t, "origin", 2)
	clientCert, clientKey := ca.issue(t, "agent", 3)
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
	good, err := TLSConfig{Cert: clientCert, Key: clientKey, CA: filepath.Join(ca.dir, "ca.pem")}.DialOption()
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
	otherCert, otherKey := other.issue(t, "outsider", 4)
	outsider, err := TLSConfig{Cert: otherCert, Key: otherKey, CA: filepath.Join(ca.dir, "ca.pem")}.DialOption()
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
		if _, err := c.ServerOption(); err == nil {
			t.Errorf("%s: ServerOption succeeded", name)
		}
		if _, err := c.DialOption(); err == nil {
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
