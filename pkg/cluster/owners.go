package cluster

import "github.com/shoal-dev/shoal/internal/rendezvous"

// Member is one origin node as the cluster sees it.
type Member struct {
	// Name is the node's memberlist name, unique in the cluster. Ownership
	// is hashed on it, so a node that restarts with the same name owns the
	// same blobs (its disk cache stays useful).
	Name string
	// Addr is the node's seeder gRPC address (host:port), from its Meta.
	// Empty when the node runs no seeder.
	Addr string
}

// Owners returns the r members that own digest, best first, by rendezvous
// hashing of their names (internal/rendezvous): every node computes the
// same owners from the same member list, whatever order the list is in;
// when a node leaves, only the blobs it owned get a new owner (the next in
// their ranking), and the others keep theirs. With r <= 0 or
// r >= len(members), every member is returned, ranked.
func Owners(digest string, members []Member, r int) []Member {
	ranked := rendezvous.RankFunc(digest, members, func(m Member) string { return m.Name })
	if r <= 0 || r > len(ranked) {
		r = len(ranked)
	}
	return ranked[:r]
}
