package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

func TestAuthConfigFileReplacesTheSection(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "origin.yaml")
	if err := writeFile(cfgPath, `
auth:
  rules:
    - repositories: ["**"]
      subjects: [anonymous]
      actions: [pull, push, delete]
  token:
    service: from-the-section
`); err != nil {
		t.Fatal(err)
	}
	authPath := filepath.Join(dir, "auth.yaml")
	if err := writeFile(authPath, `
rules:
  - repositories: ["path1/**"]
    subjects: [anonymous]
    actions: [pull]
`); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parseConfig([]string{"--config", cfgPath})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Auth.Rules) != 1 || cfg.Auth.Token.Service != "from-the-section" || !cfg.Auth.Enabled() {
		t.Fatalf("auth: section not read: %+v", cfg.Auth)
	}
	cfg, _, err = parseConfig([]string{"--config", cfgPath, "--auth-config", authPath})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Auth.Rules) != 1 || cfg.Auth.Rules[0].Repositories[0] != "path1/**" {
		t.Errorf("--auth-config did not replace the section's rules: %+v", cfg.Auth.Rules)
	}
	if cfg.Auth.Token.Service != "shoal" {
		t.Errorf("token.service %q: the file replaces the whole section, defaults included, want shoal", cfg.Auth.Token.Service)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := writeFile(bad, "rules:\n  - repositories: [\"**\"]\n    subjects: [everyone]\n    actions: [pull]\n"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := parseConfig([]string{"--auth-config", bad}); err == nil {
		t.Error("an auth config with an unknown subject was accepted")
	}
	if _, _, err := parseConfig([]string{"--tls-client-ca", filepath.Join(dir, "ca.pem")}); err == nil ||
		!strings.Contains(err.Error(), "clientCA") {
		t.Errorf("a client CA without TLS: err %v, want one naming clientCA", err)
	}
}

func TestOpenOriginWarnsLoudly(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAuthorizer(DefaultConfig().Auth, key, log, nil)
	if err != nil || a != nil {
		t.Fatalf("default config: authorizer %v, err %v; want none: the default is open", a, err)
	}
	if out := buf.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "ACCESS CONTROL IS OFF") {
		t.Errorf("an open origin logged %q, want a WARN saying access control is off", out)
	}
}

func TestSigningKeyFromFileOrSharedInStorage(t *testing.T) {
	ctx := t.Context()
	d := inmemory.New()
	first, err := loadSigningKey(ctx, "", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetContent(ctx, auth.KeyPath); err != nil {
		t.Fatalf("the created key is not in storage at %s: %v", auth.KeyPath, err)
	}
	again, err := loadSigningKey(ctx, "", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID() != first.ID() {
		t.Errorf("a second node on the same storage got key %s, the first %s", again.ID(), first.ID())
	}

	own, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := own.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	path := testpki.WriteFile(t, t.TempDir(), "signing-key.pem", pemBytes)
	fromFile, err := loadSigningKey(ctx, path, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fromFile.ID() != own.ID() {
		t.Errorf("signingKey file: key %s, want the file's %s", fromFile.ID(), own.ID())
	}
}

// TestClientCertificatesNameMachines serves the registry API with
// serverTLS's config: a client with a certificate from the client CA is
// the machine its rules name; one without a certificate still connects
// (anonymous pulls); one with a certificate from another CA is refused.
func TestClientCertificatesNameMachines(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "shoal clients")
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.PEM)
	cfg := auth.DefaultConfig()
	cfg.Rules = []auth.Rule{
		{Repositories: []string{"path1/**"}, Subjects: []string{"anonymous"}, Actions: []auth.Action{auth.Pull}},
		{Repositories: []string{"builds/**"}, Subjects: []string{"cert:build-1"}, Actions: []auth.Action{auth.Pull, auth.Push}},
	}
	srv, err := origin.New(inmemory.New(), origin.DefaultConfig(), quietLog, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetAuthorizer(newTestAuthz(t, cfg))

	tlsCfg, err := serverTLS(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if tlsCfg.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Errorf("ClientAuth %v, want VerifyClientCertIfGiven: anonymous pulls must still connect", tlsCfg.ClientAuth)
	}
	certPEM, keyPEM := ca.Issue(t, "origin", 2, x509.ExtKeyUsageServerAuth)
	serverCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg.Certificates = []tls.Certificate{serverCert}
	ts := httptest.NewUnstartedServer(srv)
	ts.TLS = tlsCfg
	ts.StartTLS()
	defer ts.Close()

	client := func(cert ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: cert}}}
	}
	clientCert := func(ca *testpki.CA, cn string) tls.Certificate {
		c, k := ca.Issue(t, cn, 3, x509.ExtKeyUsageClientAuth)
		pair, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return pair
	}
	post := func(c *http.Client, repo string) (int, error) {
		resp, err := c.Post(ts.URL+"/v2/"+repo+"/blobs/uploads/", "", nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	build1 := client(clientCert(ca, "build-1"))
	if st, err := post(build1, "builds/app"); err != nil || st != http.StatusAccepted {
		t.Errorf("push from build-1: %d %v, want 202", st, err)
	}
	if st, err := post(client(clientCert(ca, "laptop")), "builds/app"); err != nil || st != http.StatusUnauthorized {
		t.Errorf("push from another machine: %d %v, want 401", st, err)
	}
	anon := client()
	if st, err := post(anon, "builds/app"); err != nil || st != http.StatusUnauthorized {
		t.Errorf("push without a certificate: %d %v, want 401", st, err)
	}
	resp, err := anon.Get(ts.URL + "/v2/path1/app/tags/list")
	if err != nil {
		t.Fatalf("anonymous pull without a certificate could not connect: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("anonymous tags list of an empty public repository: %d, want 404", resp.StatusCode)
	}
	// Go's client offers only certificates of the CAs the server names;
	// a forger offers its own anyway.
	forged := clientCert(testpki.NewCA(t, "another CA"), "build-1")
	stranger := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forged, nil }}}}
	if st, err := post(stranger, "builds/app"); err == nil {
		t.Errorf("a certificate named build-1 from another CA connected (status %d): it must be refused, not ignored", st)
	}
}
