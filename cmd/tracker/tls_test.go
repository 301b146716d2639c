package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// With a client CA configured, gRPC announces need a certificate from the
// cluster CA, while /healthz stays reachable over TLS without one.
func TestServeRequiresClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "shoal test CA")
	srvCert, srvKey := ca.Issue(t, "127.0.0.1", 2, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.Issue(t, "127.0.0.1", 3, x509.ExtKeyUsageClientAuth)

	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.TLS = TLSConfig{
		Cert:     testpki.WriteFile(t, dir, "srv.pem", srvCert),
		Key:      testpki.WriteFile(t, dir, "srv-key.pem", srvKey),
		ClientCA: testpki.WriteFile(t, dir, "ca.PEM", ca.PEM),
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
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var a [2]string
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("serve ended before listening: %v", err)
	}

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	announce := func(tc *tls.Config) error {
		conn, err := grpc.NewClient(a[0], grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			return err
		}
		defer conn.Close()
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		defer acancel()
		_, err = trackerpb.NewTrackerClient(conn).Announce(actx, &trackerpb.AnnounceRequest{
			Digest: "sha256:" + strings.Repeat("cd", 32), PeerId: "a", Addr: "127.0.0.1:7002"})
		return err
	}
	if err := announce(&tls.Config{RootCAs: roots}); err == nil {
		t.Fatal("announce without a client certificate succeeded, want it refused")
	}
	pair, err := tls.X509KeyPair(cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := announce(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}); err != nil {
		t.Fatalf("announce with a cluster client certificate: %v", err)
	}

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := hc.Get("https://" + a[1] + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz over TLS without a client certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz = %d, want 200", resp.StatusCode)
	}
}
