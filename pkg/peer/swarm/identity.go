package swarm

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/pkg/auth"
)

// peerIdentity returns who the peer on a stream (ctx is the stream's
// context, either side) is: its id and whether it is an origin seeder.
//
// With Options.RequireIdentity (mTLS), both come from its verified cluster
// certificate (auth.PeerFromContext), and a handshake claiming another id
// is refused. Peer ids key the scheduler's peers and blacklist and the
// replacement of a restarted peer's streams (register): a peer that could
// claim another's id, or an origin's, could get that peer blacklisted or
// its streams closed, on every host it talks to. Without it, the
// handshake's claim, and origin as the dialer believed (tracker answer or
// configuration).
func (s *Swarm) peerIdentity(ctx context.Context, claimed string, origin bool) (string, bool, error) {
	if !s.requireIdentity {
		return claimed, origin, nil
	}
	id, err := auth.AuthenticatePeer(ctx)
	switch {
	case err != nil:
		return "", false, status.Errorf(codes.Unauthenticated, "peers need a cluster certificate with a shoal://<role>/<peer-id> identity (docs/certificates.md): %v", err)
	case id.Role == auth.RoleTracker:
		return "", false, status.Errorf(codes.PermissionDenied, "%s is a tracker certificate: trackers exchange no pieces", id)
	case claimed != id.ID:
		return "", false, status.Errorf(codes.PermissionDenied, "handshake peer_id %q is not the peer id of certificate %s", claimed, id)
	}
	return id.ID, id.Role == auth.RoleOrigin, nil
}
