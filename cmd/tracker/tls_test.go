package main

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// serveTLS runs the tracker with a tracker certificate of ca and, when
// clientCA, mTLS with ca; it returns the gRPC and HTTP addresses.
func serveTLS(t *testing.T, ca *testpki.CA, clientCA bool) (grpcAddr, httpAddr string) {
	t.Helper()
	dir := t.TempDir()
	srvCert, srvKey := ca.IssuePeer(t, auth.RoleTracker, "tracker-1")
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.TLS = daemon.TLSConfig{
		Cert: testpki.WriteFile(t, dir, "tracker.pem", srvCert),
		Key:  testpki.WriteFile(t, dir, "tracker-key.pem", srvKey),
	}
	if clientCA {
		cfg.TLS.CA = testpki.WriteFile(t, dir, "ca.pem", ca.PEM)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(g, h string) { addrs <- [2]string{g, h} })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	var a [2]string
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("serve ended before listening: %v", err)
	}
	return a[0], a[1]
}

// clientTLS returns a client configuration trusting ca and presenting the
// given certificate, if any.
func clientTLS(t *testing.T, ca *testpki.CA, certPEM, keyPEM []byte) *tls.Config {
	t.Helper()
	tc := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
	if certPEM != nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc
}

func announceOver(t *testing.T, addr string, tc *tls.Config, req *trackerpb.AnnounceRequest) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = trackerpb.NewTrackerClient(conn).Announce(ctx, req)
	return err
}

func getOver(t *testing.T, tc *tls.Config, url string) (int, string, error) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

var testDigest = "sha256:" + strings.Repeat("cd", 32)

// With a client CA configured, gRPC announces need a cluster certificate
// and answer to it; /healthz stays reachable over TLS without one, the
// peer listing does not.
func TestServeRequiresClientCertificates(t *testing.T) {
	ca := testpki.NewCA(t, "shoal test CA")
	grpcAddr, httpAddr := serveTLS(t, ca, true)
	agentCert, agentKey := ca.IssuePeer(t, auth.RoleAgent, "agent-1")

	req := &trackerpb.AnnounceRequest{Digest: testDigest, PeerId: "agent-1", Addr: "127.0.0.1:7002"}
	if err := announceOver(t, grpcAddr, clientTLS(t, ca, nil, nil), req); err == nil {
		t.Fatal("announce without a client certificate succeeded, want it refused")
	}
	if err := announceOver(t, grpcAddr, clientTLS(t, ca, agentCert, agentKey), req); err != nil {
		t.Fatalf("announce with a cluster client certificate: %v", err)
	}
	forged := &trackerpb.AnnounceRequest{Digest: testDigest, PeerId: "agent-1", Addr: "127.0.0.1:7002", IsOrigin: true, Complete: true}
	if err := announceOver(t, grpcAddr, clientTLS(t, ca, agentCert, agentKey), forged); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("is_origin announced with an agent certificate: %v, want PermissionDenied", err)
	}

	if code, _, err := getOver(t, clientTLS(t, ca, nil, nil), "https://"+httpAddr+"/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("GET /healthz over TLS without a client certificate = %d, %v; want 200", code, err)
	}
	debug := "https://" + httpAddr + "/debug/peers?digest=" + testDigest
	code, body, err := getOver(t, clientTLS(t, ca, nil, nil), debug)
	if err != nil || code != http.StatusForbidden || strings.Contains(body, "agent-1") {
		t.Fatalf("GET /debug/peers without a client certificate = %d %q, %v; want 403 naming no peer", code, body, err)
	}
	other := testpki.NewCA(t, "another CA")
	oc, ok := other.IssuePeer(t, auth.RoleAgent, "agent-9")
	if code, body, err := getOver(t, clientTLS(t, ca, oc, ok), debug); err == nil && strings.Contains(body, "agent-1") {
		t.Fatalf("GET /debug/peers with another CA's certificate = %d %q, want it refused", code, body)
	}
	code, body, err = getOver(t, clientTLS(t, ca, agentCert, agentKey), debug)
	if err != nil || code != http.StatusOK || !strings.Contains(body, `"id":"agent-1","addr":"127.0.0.1:7002"`) {
		t.Fatalf("GET /debug/peers with a cluster certificate = %d %q, %v; want 200 listing agent-1", code, body, err)
	}
}

// TLS without a client CA serves anyone, as a plaintext tracker does:
// announces are taken at their word.
func TestServeTLSWithoutClientCA(t *testing.T) {
	ca := testpki.NewCA(t, "shoal test CA")
	grpcAddr, httpAddr := serveTLS(t, ca, false)
	req := &trackerpb.AnnounceRequest{Digest: testDigest, PeerId: "anyone", Addr: "127.0.0.1:7002", IsOrigin: true, Complete: true}
	if err := announceOver(t, grpcAddr, clientTLS(t, ca, nil, nil), req); err != nil {
		t.Fatalf("announce over TLS without client CA: %v", err)
	}
	code, body, err := getOver(t, clientTLS(t, ca, nil, nil), "https://"+httpAddr+"/debug/peers?digest="+testDigest)
	if err != nil || code != http.StatusOK || !strings.Contains(body, `"id":"anyone"`) {
		t.Fatalf("GET /debug/peers = %d %q, %v; want 200 listing the peer", code, body, err)
	}
}
