package origin

import (
	"path"

	"github.com/opencontainers/go-digest"
)

// The on-storage layout is registry:2's, so that the reference registry and
// Shoal can serve the same directory. Paths below are relative to the
// storage root.
const (
	rootPrefix  = "/docker/registry/v2"
	blobsPrefix = rootPrefix + "/blobs"
	reposPrefix = rootPrefix + "/repositories"

	// shoalPrefix holds Shoal's own data, which registry:2 never reads.
	shoalPrefix = "/shoal/v1"
)

func blobDataPath(d digest.Digest) string {
	h := d.Encoded()
	return path.Join(blobsPrefix, string(d.Algorithm()), h[:2], h, "data")
}

func repoPath(name string) string { return path.Join(reposPrefix, name) }

func layerLinkPath(name string, d digest.Digest) string {
	return path.Join(reposPrefix, name, "_layers", string(d.Algorithm()), d.Encoded(), "link")
}

func revisionLinkPath(name string, d digest.Digest) string {
	return path.Join(reposPrefix, name, "_manifests", "revisions", string(d.Algorithm()), d.Encoded(), "link")
}

func tagsPath(name string) string {
	return path.Join(reposPrefix, name, "_manifests", "tags")
}

func tagPath(name, tag string) string { return path.Join(tagsPath(name), tag) }

func tagCurrentPath(name, tag string) string {
	return path.Join(tagsPath(name), tag, "current", "link")
}

func tagIndexLinkPath(name, tag string, d digest.Digest) string {
	return path.Join(tagsPath(name), tag, "index", string(d.Algorithm()), d.Encoded(), "link")
}

func uploadsPath(name string) string { return path.Join(reposPrefix, name, "_uploads") }

func uploadPath(name, id string) string { return path.Join(uploadsPath(name), id) }

// referrersPath is the directory that indexes the manifests whose subject is
// d, in repository name. Each entry is <alg>/<hex> holding the referrer's
// descriptor as JSON. registry:2 keeps no such index.
func referrersPath(name string, subject digest.Digest) string {
	return path.Join(shoalPrefix, "repositories", name, "_referrers", string(subject.Algorithm()), subject.Encoded())
}

func referrerEntryPath(name string, subject, d digest.Digest) string {
	return path.Join(referrersPath(name, subject), string(d.Algorithm()), d.Encoded())
}
