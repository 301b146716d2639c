package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSConfig names the PEM files a component of the P2P side (the origin's
// seeder, the tracker, the peer agent) secures its gRPC and peer
// connections with; docs/certificates.md makes them. One type, so that the
// three read the same YAML (tls: {cert, key, ca, serverName}) and mean the
// same by it.
type TLSConfig struct {
	// Cert is this component's PEM certificate (chain), served on its
	// listener and, with CA, presented as a client certificate on the
	// connections it makes. It needs Key. Empty (default): plaintext.
	Cert string `yaml:"cert"`
	// Key is Cert's PEM private key.
	Key string `yaml:"key"`
	// CA is the cluster CA (PEM), or a bundle of the old and new CA while
	// rotating. Set, it turns on mTLS: clients must present a certificate
	// it signed, and the servers this component calls are verified against
	// it. Empty (default): no client certificates asked for, servers
	// verified against the system roots. Needs Cert and Key.
	CA string `yaml:"ca"`
	// ServerName overrides the name checked in the certificates of the
	// servers this component calls, for clusters whose certificates carry
	// one shared name rather than each host's address. Empty (default):
	// the host dialled. The tracker calls no one and takes none.
	ServerName string `yaml:"serverName"`
}

// Enabled reports whether the component serves TLS.
func (t TLSConfig) Enabled() bool { return t.Cert != "" }

// MutualTLS reports whether client certificates are required (CA set).
func (t TLSConfig) MutualTLS() bool { return t.CA != "" }

// Validate reports a combination that cannot work, naming the keys as the
// YAML spells them (under tls).
func (t TLSConfig) Validate() error {
	switch {
	case (t.Cert == "") != (t.Key == ""):
		return errors.New("tls needs both cert and key")
	case t.CA != "" && t.Cert == "":
		return errors.New("tls.ca (mTLS) needs tls.cert and tls.key: client certificates come only over TLS")
	case t.ServerName != "" && t.Cert == "":
		return errors.New("tls.serverName needs tls.cert and tls.key: without them connections are plaintext")
	}
	return nil
}

// ServerConfig returns the listener's TLS configuration, nil when TLS is
// off. With CA, client certificates signed by it are required.
func (t TLSConfig) ServerConfig() (*tls.Config, error) {
	if !t.Enabled() {
		return nil, nil
	}
	cert, pool, err := t.load()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if pool != nil {
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientConfig returns the TLS configuration of the connections the
// component makes, nil when TLS is off (a cluster without TLS is plaintext
// throughout): it presents Cert, verifies servers against CA (the system
// roots without it) and checks ServerName when set.
func (t TLSConfig) ClientConfig() (*tls.Config, error) {
	if !t.Enabled() {
		return nil, nil
	}
	cert, pool, err := t.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: t.ServerName, MinVersion: tls.VersionTLS12}, nil
}

// load reads the key pair and, when CA is set, the CA pool (nil without).
func (t TLSConfig) load() (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tls: loading the key pair %s, %s: %w", t.Cert, t.Key, err)
	}
	if t.CA == "" {
		return cert, nil, nil
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tls: reading the CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("tls: the CA file %s holds no PEM certificate", t.CA)
	}
	return cert, pool, nil
}
