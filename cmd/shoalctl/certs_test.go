package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/tracker"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

func certs(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := runCerts(args, &out); err != nil {
		t.Fatalf("shoalctl certs %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// mtlsTracker runs a tracker requiring certificates of the CA in caFile,
// serving with certFile/keyFile, and returns its address.
func mtlsTracker(t *testing.T, caFile, certFile, keyFile string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("loading the tracker's key pair: %v", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s holds no certificate", caFile)
	}
	srv, err := tracker.NewServer(tracker.DefaultConfig(), tracker.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RequireIdentity: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
	})))
	trackerpb.RegisterTrackerServer(g, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// announceAs announces digest to the tracker at addr as the holder of
// certFile/keyFile, checking the tracker by its DNS name localhost.
func announceAs(t *testing.T, addr, caFile, certFile, keyFile string, req *trackerpb.AnnounceRequest) (*trackerpb.AnnounceResponse, error) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("loading %s: %v", certFile, err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: "localhost",
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return trackerpb.NewTrackerClient(conn).Announce(ctx, req)
}

const testDigest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

// checkWorkingSet checks that the CA in dir and the certificates
// tracker-1, origin-1 and agent-1 in it make a working mTLS tracker: the
// agent and the origin announce, and the agent's is_origin is refused.
func checkWorkingSet(t *testing.T, dir string) {
	t.Helper()
	path := func(name string) string { return filepath.Join(dir, name) }
	ca := path("ca.pem")
	addr := mtlsTracker(t, ca, path("tracker-1.pem"), path("tracker-1-key.pem"))
	if _, err := announceAs(t, addr, ca, path("origin-1.pem"), path("origin-1-key.pem"), &trackerpb.AnnounceRequest{
		Digest: testDigest, PeerId: "origin-1", Addr: "127.0.0.1:7002", Complete: true, IsOrigin: true}); err != nil {
		t.Fatalf("origin-1 announcing as an origin: %v", err)
	}
	resp, err := announceAs(t, addr, ca, path("agent-1.pem"), path("agent-1-key.pem"), &trackerpb.AnnounceRequest{
		Digest: testDigest, PeerId: "agent-1", Addr: "127.0.0.1:7003"})
	if err != nil {
		t.Fatalf("agent-1 announcing: %v", err)
	}
	if len(resp.GetPeers()) != 1 || resp.GetPeers()[0].GetPeerId() != "origin-1" || !resp.GetPeers()[0].GetIsOrigin() {
		t.Fatalf("agent-1 was handed %v, want origin-1 as an origin", resp.GetPeers())
	}
	_, err = announceAs(t, addr, ca, path("agent-1.pem"), path("agent-1-key.pem"), &trackerpb.AnnounceRequest{
		Digest: testDigest, PeerId: "agent-1", Addr: "127.0.0.1:7003", IsOrigin: true, Complete: true})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("agent-1 announcing is_origin: %v, want PermissionDenied", err)
	}
}

func TestCertsMakeAWorkingSet(t *testing.T) {
	for _, key := range []string{"ecdsa-p256", "ed25519"} {
		t.Run(key, func(t *testing.T) {
			dir := t.TempDir()
			certs(t, "init", "--dir", dir, "--key", key)
			certs(t, "issue", "--dir", dir, "--key", key, "--role", "tracker", "--id", "tracker-1", "--ip", "127.0.0.1", "--dns", "localhost")
			certs(t, "issue", "--dir", dir, "--key", key, "--role", "origin", "--id", "origin-1", "--ip", "127.0.0.1,::1", "--days", "30")
			out := certs(t, "issue", "--dir", dir, "--key", key, "--role", "agent", "--id", "agent-1", "--ip", "127.0.0.1", "--dns", "agent-1.example.com")
			if !strings.Contains(out, "shoal://agent/agent-1") {
				t.Errorf("issue output %q does not name the identity", out)
			}
			checkWorkingSet(t, dir)

			cert := readCert(t, filepath.Join(dir, "origin-1.pem"))
			id, err := auth.PeerIdentity(cert)
			if err != nil || id.Role != auth.RoleOrigin || id.ID != "origin-1" || len(id.IPs) != 2 || cert.Subject.CommonName != "origin-1" {
				t.Fatalf("origin-1.pem: identity %+v (%v), CN %q; want origin origin-1 at two addresses, CN origin-1", id, err, cert.Subject.CommonName)
			}
			if d := time.Until(cert.NotAfter); d < 29*24*time.Hour || d > 31*24*time.Hour {
				t.Errorf("--days 30 made a certificate valid for another %s", d)
			}
			for _, name := range []string{"ca-key.pem", "agent-1-key.pem"} {
				fi, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v, want 0600", name, fi.Mode().Perm())
				}
			}
		})
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestCertsRefuse(t *testing.T) {
	dir := t.TempDir()
	certs(t, "init", "--dir", dir)
	certs(t, "issue", "--dir", dir, "--role", "agent", "--id", "a")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"init", "--dir", dir}, "not overwriting"},
		{[]string{"issue", "--dir", dir, "--role", "agent", "--id", "a"}, "not overwriting"},
		{[]string{"issue", "--dir", dir, "--role", "admin", "--id", "b"}, "unknown role"},
		{[]string{"issue", "--dir", dir, "--role", "agent", "--id", "../b"}, "not allowed"},
		{[]string{"issue", "--dir", dir, "--role", "agent", "--id", "b", "--ip", "host-1"}, "--ip"},
		{[]string{"issue", "--dir", dir, "--role", "agent", "--id", "b", "--key", "rsa"}, "unknown key algorithm"},
		{[]string{"issue", "--dir", t.TempDir(), "--role", "agent", "--id", "b"}, "certs init"},
		{[]string{"issue", "--dir", dir, "--role", "agent", "--id", "b", "extra"}, "unexpected arguments"},
		{[]string{"rotate"}, "unknown command"},
	}
	for _, tt := range tests {
		err := runCerts(tt.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("certs %q: error %v, want one containing %q", tt.args, err, tt.want)
		}
	}
	// --force replaces a host certificate: a new key for the same id.
	before, _ := os.ReadFile(filepath.Join(dir, "a-key.pem"))
	certs(t, "issue", "--dir", dir, "--role", "agent", "--id", "a", "--force")
	if after, _ := os.ReadFile(filepath.Join(dir, "a-key.pem")); bytes.Equal(before, after) {
		t.Error("issue --force left the old key in place")
	}
}

// The openssl steps of docs/certificates.md make certificates that work
// like shoalctl's, and shoalctl issues with a CA openssl made.
func TestOpenSSLStepsMakeAWorkingSet(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is not installed (Debian package openssl); CI must run this test")
		}
		t.Skip("openssl not installed")
	}
	doc, err := os.ReadFile("../../docs/certificates.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)TestOpenSSLStepsMakeAWorkingSet.*?```sh\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/certificates.md has no openssl block after the comment naming this test")
	}
	script := string(m[1])
	dir := t.TempDir()
	run := func(s string) {
		t.Helper()
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", s)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s\nscript:\n%s", err, out, s)
		}
	}
	run(script)
	// The block issues agent-1; the same steps with other variables issue
	// the tracker and origin certificates.
	oneCert := script[strings.Index(script, "role=agent"):]
	run(strings.Replace(oneCert, "role=agent id=agent-1", "role=origin id=origin-1", 1))
	run(strings.Replace(oneCert, "role=agent id=agent-1", "role=tracker id=tracker-1", 1))
	checkWorkingSet(t, dir)

	// shoalctl issues with the CA openssl made.
	certs(t, "issue", "--dir", dir, "--role", "agent", "--id", "agent-2", "--ip", "127.0.0.1")
	if _, err := readCert(t, filepath.Join(dir, "agent-2.pem")).Verify(x509.VerifyOptions{
		Roots: poolOf(t, filepath.Join(dir, "ca.pem")), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Fatalf("agent-2, issued by shoalctl with the openssl CA, does not verify: %v", err)
	}
}

func poolOf(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, path))
	return pool
}

// `shoalctl certs` needs no admin API.
func TestRunDispatchesCerts(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SHOAL_ADMIN", "http://127.0.0.1:1")
	if err := run(context.Background(), []string{"certs", "init", "--dir", dir}, io.Discard); err != nil {
		t.Fatalf("shoalctl certs init: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err != nil {
		t.Fatalf("shoalctl certs init wrote no CA: %v", err)
	}
}
