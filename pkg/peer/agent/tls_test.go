package agent

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// writeTestPKI writes a CA and one certificate for 127.0.0.1, usable as
// server and client, and returns the TLS settings naming them.
func writeTestPKI(t *testing.T) TLSConfig {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "shoal test CA")
	cert, key := ca.Issue(t, "127.0.0.1", 2)
	return TLSConfig{
		Cert: testpki.WriteFile(t, dir, "agent.pem", cert),
		Key:  testpki.WriteFile(t, dir, "agent-key.pem", key),
		CA:   testpki.WriteFile(t, dir, "ca.pem", ca.PEM),
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
