package seeder

import (
	"context"
	"crypto/tls"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/pkg/auth"
)

// identity returns this node's cluster identity when it runs mTLS (CA
// set): its certificate must then be an origin certificate of the cluster
// profile, shoal://origin/<peer-id>, whose id the node announces and
// handshakes with (trackers and agents accept no other). Without CA, the
// zero Identity.
func identity(t TLSConfig) (auth.Identity, error) {
	if t.CA == "" {
		return auth.Identity{}, nil
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return auth.Identity{}, fmt.Errorf("seeder tls: loading certificate %s: %w", t.Cert, err)
	}
	id, err := auth.OwnIdentity(&cert)
	if err == nil && id.Role != auth.RoleOrigin {
		err = fmt.Errorf("%s is an %s certificate", id, id.Role)
	}
	if err != nil {
		return auth.Identity{}, fmt.Errorf("seeder tls: with a cluster CA (mTLS) the node's certificate %s must be an origin certificate, shoal://origin/<peer-id> (shoalctl certs issue --role origin, docs/certificates.md): %w", t.Cert, err)
	}
	return id, nil
}

// streamPeer returns the id the superseeding ledger knows an Exchange's
// agent by. With mTLS it is the peer id of the agent's verified
// certificate, and a handshake naming another is refused: it could make
// the ledger count pieces as given to another agent. Otherwise it is what
// the handshake says (possibly empty).
func (s *Server) streamPeer(ctx context.Context, claimed string) (string, error) {
	if !s.requireIdentity {
		return claimed, nil
	}
	id, err := auth.AuthenticatePeer(ctx)
	if err != nil {
		return "", status.Errorf(codes.Unauthenticated, "origin seeder: peers need a cluster certificate with a shoal://<role>/<peer-id> identity (docs/certificates.md): %v", err)
	}
	if claimed != "" && claimed != id.ID {
		return "", status.Errorf(codes.PermissionDenied, "origin seeder: handshake peer_id %q is not the peer id of certificate %s", claimed, id)
	}
	return id.ID, nil
}

// ServerOption returns the gRPC server's transport credentials: TLS with
// Cert/Key, requiring client certificates signed by CA when CA is set
// (mTLS: an outsider cannot pull pieces), or none when TLS is off.
func ServerOption(t TLSConfig) (grpc.ServerOption, error) {
	cfg, err := t.ServerConfig()
	if err != nil {
		return nil, fmt.Errorf("seeder: %w", err)
	}
	if cfg == nil {
		return grpc.Creds(insecure.NewCredentials()), nil
	}
	return grpc.Creds(credentials.NewTLS(cfg)), nil
}

// DialOption returns the credentials for this node's own calls (trackers,
// other origin nodes): TLS verified against CA, presenting Cert/Key, when
// TLS is on; plaintext otherwise, matching a cluster that runs without TLS.
func DialOption(t TLSConfig) (grpc.DialOption, error) {
	cfg, err := t.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("seeder: %w", err)
	}
	if cfg == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}
