package daemon_test

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/daemon"
	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/pkg/auth"
)

func TestTLSConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  daemon.TLSConfig
		want string // "" for valid
	}{
		{"off", daemon.TLSConfig{}, ""},
		{"mTLS", daemon.TLSConfig{Cert: "c", Key: "k", CA: "ca", ServerName: "n"}, ""},
		{"cert without key", daemon.TLSConfig{Cert: "c"}, "both cert and key"},
		{"CA without cert", daemon.TLSConfig{CA: "ca"}, "tls.ca (mTLS) needs"},
		{"serverName without cert", daemon.TLSConfig{ServerName: "n"}, "tls.serverName needs"},
	} {
		err := tc.tls.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestTLSConfigConnects: the server and client configurations of one
// cluster CA complete a mutual handshake, a client without a certificate
// is refused by an mTLS server, and TLS off is nil for both.
func TestTLSConfigConnects(t *testing.T) {
	if s, err := (daemon.TLSConfig{}).ServerConfig(); s != nil || err != nil {
		t.Errorf("ServerConfig with TLS off = %v, %v; want nil, nil (plaintext)", s, err)
	}
	if c, err := (daemon.TLSConfig{}).ClientConfig(); c != nil || err != nil {
		t.Errorf("ClientConfig with TLS off = %v, %v; want nil, nil (plaintext)", c, err)
	}
	ca, dir := testpki.NewCA(t, "daemon test CA"), t.TempDir()
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.PEM)
	files := func(role auth.Role, id string) daemon.TLSConfig {
		cert, key := ca.IssuePeer(t, role, id)
		return daemon.TLSConfig{Cert: testpki.WriteFile(t, dir, id+".pem", cert), Key: testpki.WriteFile(t, dir, id+"-key.pem", key), CA: caFile}
	}
	srv, err := files(auth.RoleTracker, "tracker-1").ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if srv.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("server ClientAuth %v with a CA, want RequireAndVerifyClientCert", srv.ClientAuth)
	}
	agent := files(auth.RoleAgent, "agent-1")
	agent.ServerName = "localhost"
	cli, err := agent.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cli.ServerName != "localhost" {
		t.Errorf("client ServerName %q, want serverName's localhost", cli.ServerName)
	}
	if err := handshake(t, srv, cli); err != nil {
		t.Errorf("mutual handshake within one CA: %v", err)
	}
	noCert := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
	if err := handshake(t, srv, noCert); err == nil {
		t.Error("an mTLS server accepted a client without a certificate")
	}
	if _, err := (daemon.TLSConfig{Cert: "/nonexistent.pem", Key: "/nonexistent-key.pem"}).ServerConfig(); err == nil ||
		!strings.Contains(err.Error(), "/nonexistent.pem") {
		t.Errorf("ServerConfig with missing files: %v, want an error naming the file", err)
	}
}

// handshake runs one TLS connection between server and client over a
// pipe and returns the server side's error, else the client's.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(a, server)
		errc <- s.Handshake()
		s.Close()
	}()
	c := tls.Client(b, client)
	cerr := c.Handshake()
	if cerr == nil {
		// TLS 1.3: the server's verdict on the client certificate comes
		// after the client's handshake; a read surfaces it.
		_, _ = c.Read(make([]byte, 1))
	}
	c.Close()
	if serr := <-errc; serr != nil {
		return serr
	}
	return cerr
}
