// Package testpki issues throwaway certificates for tests: a CA and
// certificates for 127.0.0.1 signed by it, as PEM, and writes them to
// files. Cluster members' certificates (IssuePeer) follow the cluster
// profile of pkg/auth, the one `shoalctl certs issue` writes. It is for
// tests only; nothing here is fit for real keys.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/pkg/auth"
)

// CA is a test certificate authority valid for an hour either side of now.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// PEM is Cert, PEM-encoded.
	PEM []byte
}

// NewCA returns a new CA with the given common name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, PEM: encode("CERTIFICATE", der)}
}

// Issue returns a PEM certificate and key with common name cn for the IP
// address 127.0.0.1, for the given extended key usages (server and client
// when none are given). It carries no peer identity: use it for listeners
// outside the cluster profile (the origin's registry API), IssuePeer for
// origins, agents and trackers.
func (ca *CA) Issue(t testing.TB, cn string, serial int64, usages ...x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	if len(usages) == 0 {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: usages,
	}
	return ca.sign(t, tmpl)
}

// sign signs tmpl with a new key and returns both as PEM.
func (ca *CA) sign(t testing.TB, tmpl *x509.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return encode("CERTIFICATE", der), encode("EC PRIVATE KEY", kder)
}

// IssuePeer returns a PEM certificate and key in the cluster profile
// (auth.PeerTemplate): shoal://<role>/<id>, for 127.0.0.1 and localhost,
// server and client use.
func (ca *CA) IssuePeer(t testing.TB, role auth.Role, id string) (certPEM, keyPEM []byte) {
	t.Helper()
	return ca.IssueIdentity(t, auth.Identity{
		Role: role, ID: id, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, DNSNames: []string{"localhost"},
	})
}

// IssueIdentity returns a PEM certificate and key in the cluster profile
// for id, addresses included as given.
func (ca *CA) IssueIdentity(t testing.TB, id auth.Identity) (certPEM, keyPEM []byte) {
	t.Helper()
	tmpl, err := auth.PeerTemplate(id, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return ca.sign(t, tmpl)
}

// Pool returns a certificate pool trusting the CA.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// WriteFile writes b to dir/name (mode 0600) and returns the path.
func WriteFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func encode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
