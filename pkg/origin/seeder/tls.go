package seeder

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ServerOption returns the gRPC server's transport credentials: TLS with
// Cert/Key, requiring client certificates signed by CA when CA is set
// (mTLS: an outsider cannot pull pieces), or none when TLS is off.
func (t TLSConfig) ServerOption() (grpc.ServerOption, error) {
	if !t.Enabled() {
		return grpc.Creds(insecure.NewCredentials()), nil
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("seeder tls: loading certificate %s: %w", t.Cert, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		pool, err := loadPool(t.CA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return grpc.Creds(credentials.NewTLS(cfg)), nil
}

// DialOption returns the credentials for this node's own calls (trackers,
// other origin nodes): TLS verified against CA, presenting Cert/Key, when
// TLS is on; plaintext otherwise, matching a cluster that runs without TLS.
func (t TLSConfig) DialOption() (grpc.DialOption, error) {
	if !t.Enabled() {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("seeder tls: loading certificate %s: %w", t.Cert, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		if cfg.RootCAs, err = loadPool(t.CA); err != nil {
			return nil, err
		}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seeder tls: reading CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("seeder tls: no PEM certificate in CA file %s", path)
	}
	return pool, nil
}
