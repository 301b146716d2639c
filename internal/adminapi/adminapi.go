// Package adminapi is the wire form of the origin's cluster admin routes,
// shared by the origin that serves them and shoalctl that calls them, so
// that the two cannot drift apart.
package adminapi

// The routes, on the origin's admin listener, behind its admin action.
const (
	// ClusterPath answers GET with a ClusterStatus (?digest=D adds the
	// blob's owners).
	ClusterPath = "/admin/v1/cluster"
	// PreheatPath answers POST ?repository=R&reference=REF with a
	// PreheatResult once the image's blobs are warm on their owners.
	PreheatPath = "/admin/v1/preheat"
)

// ClusterStatus is one origin node's view of the origin cluster.
type ClusterStatus struct {
	// Seeder is false when the node runs no seeder: it is in no cluster
	// and agents proxy its blobs without P2P.
	Seeder bool `json:"seeder"`
	// Node is the node's cluster name.
	Node string `json:"node,omitempty"`
	// Members are the live origin nodes the node sees, itself included.
	Members []Member `json:"members"`
	// Replicas is how many owners each blob has.
	Replicas int `json:"replicas,omitempty"`
	// Trackers are the tracker gRPC addresses the node announces to.
	Trackers []string `json:"trackers"`
	// Digest and Owners, when asked with ?digest=, are the blob's owners,
	// best first.
	Digest string   `json:"digest,omitempty"`
	Owners []Member `json:"owners,omitempty"`
}

// Member is an origin node.
type Member struct {
	Name string `json:"name"`
	// Seeder is the node's seeder gRPC address.
	Seeder string `json:"seeder,omitempty"`
}

// PreheatResult is what a preheat of an image did.
type PreheatResult struct {
	Repository string `json:"repository"`
	Reference  string `json:"reference"`
	// Manifest is the digest the reference resolved to.
	Manifest string        `json:"manifest"`
	Blobs    []PreheatBlob `json:"blobs"`
}

// PreheatBlob is one blob of a preheated image.
type PreheatBlob struct {
	Digest    string         `json:"digest"`
	Size      int64          `json:"size"`
	MediaType string         `json:"mediaType"`
	Owners    []PreheatOwner `json:"owners"`
	// Error is why the blob could not be preheated at all.
	Error string `json:"error,omitempty"`
}

// PreheatOwner is what one owner of a blob did.
type PreheatOwner struct {
	// Name is the owner's cluster name; empty on an origin without a
	// cluster.
	Name string `json:"name"`
	// Error is why the owner could not load the blob or its metainfo.
	Error string `json:"error,omitempty"`
}
