package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// keySettle is how long a node that created the cluster's signing key in
// storage waits before reading back the key that won, when several nodes
// start on empty storage at once (auth.LoadOrCreateKey).
const keySettle = 2 * time.Second

// loadSigningKey returns the origin cluster's signing key: from the file
// path when set, else the one shared in storage (created at first start,
// read back after settle).
func loadSigningKey(ctx context.Context, path string, d storage.Driver, settle time.Duration) (*auth.Key, error) {
	if path != "" {
		return auth.LoadKeyFile(path)
	}
	k, err := auth.LoadOrCreateKey(ctx, d, settle)
	if err != nil {
		return nil, fmt.Errorf("%w (set signingKey to a key file to keep it out of storage)", err)
	}
	return k, nil
}

// newAuthorizer returns the authorizer for cfg, or nil when cfg turns
// access control off (no users, no rules). An open origin says so loudly:
// it is the quick start's default, and a production origin left open by
// mistake must be noticed in its log.
func newAuthorizer(cfg auth.Config, key *auth.Key, log *slog.Logger, reg prometheus.Registerer) (*auth.Authorizer, error) {
	if !cfg.Enabled() {
		log.Warn("ACCESS CONTROL IS OFF: anyone who can reach the registry listener can pull, push and delete every repository. " +
			"Give --auth-config FILE (or an auth: section with htpasswd and rules) to turn it on; see docs/auth.md")
		return nil, nil
	}
	a, err := auth.New(cfg, auth.Options{Key: key, Logger: log.With("component", "auth"), Registerer: reg})
	if err != nil {
		return nil, err
	}
	log.Info("access control on", "rules", len(cfg.Rules), "htpasswd", cfg.Htpasswd, "service", cfg.Token.Service,
		"issuers", len(cfg.Token.Issuers), "trustedProxies", cfg.TrustedProxies)
	return a, nil
}

// serverTLS is the registry listener's TLS config beyond its certificate:
// with a client CA, client certificates are asked for and verified when
// given, never required, so that anonymous and password clients still
// connect; a verified certificate's names are what cert:NAME rules match.
func serverTLS(clientCA string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if clientCA == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(clientCA)
	if err != nil {
		return nil, fmt.Errorf("tls client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls client CA %s: no PEM certificate in it", clientCA)
	}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	return cfg, nil
}
