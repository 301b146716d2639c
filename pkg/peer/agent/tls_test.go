package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/proto/peerpb"
)

// writeTestPKI writes a CA and one certificate for 127.0.0.1, usable as
// server and client, and returns the TLS settings naming them.
func writeTestPKI(t *testing.T) TLSConfig {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shoal test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return TLSConfig{
		Cert: write("agent.pem", "CERTIFICATE", der),
		Key:  write("agent-key.pem", "EC PRIVATE KEY", keyDER),
		CA:   write("ca.pem", "CERTIFICATE", caDER),
	}
}

// TestPeersUseMutualTLS: with a cluster CA, agents dial seeders and serve
// and dial each other over mTLS, and a client without a certificate gets
// nothing.
func TestPeersUseMutualTLS(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(400_000, 30)
	layerD := o.pushBlob("team/app", layer)
	pki := writeTestPKI(t)
	serverTLS, _, err := pki.configs()
	if err != nil {
		t.Fatal(err)
	}
	seeder := startSeeder(t, "origin-1", testPieceLen, false, grpc.Creds(credentials.NewTLS(serverTLS)))
	seeder.add(layer)
	tlsAgent := func(seeders []string) *testAgent {
		cfg := testConfig(t, o.URL, seeders, nil)
		cfg.TLS = pki
		return startAgent(t, cfg)
	}

	b := tlsAgent([]string{seeder.addr})
	pullBlob(t, b, "team/app", layerD)
	waitFor(t, "b's download to complete", 5*time.Second, func() bool { return b.metric("shoal_agent_downloads_total", "result", "completed") == 1 })
	// c takes metainfo and pieces from b, over mTLS.
	c := tlsAgent([]string{b.PeerAddr()})
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
