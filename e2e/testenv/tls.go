package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSFiles are PEM files for a server that serves TLS: its certificate
// and key, and the cluster CA (docs/certificates.md) that signed it and
// that client certificates must chain to.
type TLSFiles struct {
	Cert, Key string
	// CA is the cluster CA; readiness probes trust it.
	CA string
}

// ClientTLS returns a client configuration that trusts only the
// certificates in the PEM file ca and presents the certificate in
// certFile/keyFile, or none when certFile is empty.
func ClientTLS(ca, certFile, keyFile string) (*tls.Config, error) {
	b, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("reading CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", ca)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
