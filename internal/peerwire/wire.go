package peerwire

// The names and sizes of shoal.peer.v1 that the agent (pkg/peer/swarm) and
// the origin's seeder (pkg/origin/seeder) must agree on. Headers travel as
// gRPC metadata rather than handshake fields: a peer or origin that does
// not know one ignores it and keeps to the plain protocol.

// MaxChunk is the largest PieceChunk payload the protocol allows
// (docs/p2p.md): a larger one is a protocol violation. Seeders send chunks
// of this size, well under gRPC's 4 MiB default message limit.
const MaxChunk = 1 << 20

// OwnersHeader is the GetMetainfo response header in which a seeder lists
// the seeder addresses of the blob's owners, best first, comma-separated.
// Owners hold the blob on local disk: an agent that reached a non-owner
// (or has no tracker) exchanges pieces with them.
const OwnersHeader = "shoal-owners"

// PieceHeader is the Exchange response header in which a server (agent or
// seeder) serving the piece data path (internal/piecewire) names its port;
// the dialer connects to it on the host it dialed.
const PieceHeader = "shoal-piece-port"

// IncarnationHeader is the Exchange metadata key (request header from the
// dialer, response header from the server) carrying the sender's
// incarnation: a random id per process. Peer ids are stable per host when
// configured (a DaemonSet), so a restarted agent comes back under the id
// of the process the others may have dropped as unresponsive; its new
// incarnation tells them it is another process (see
// scheduler.PeerJoined.Incarnation).
const IncarnationHeader = "shoal-incarnation"
