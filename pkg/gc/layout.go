package gc

import (
	"context"
	// Registered so that sha256 and sha512 digests validate.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// The registry:2 on-storage layout. Shoal's origin reads and writes the same
// tree, so these paths must not drift from
// distribution/registry/storage/paths.go.
const (
	registryRoot     = "/docker/registry/v2"
	blobsRoot        = registryRoot + "/blobs"
	repositoriesRoot = registryRoot + "/repositories"

	// shoalGCRoot holds Shoal's own GC state, outside the registry tree so
	// that registry:2 never sees it.
	shoalGCRoot = "/shoal/v1/gc"
	leasePath   = shoalGCRoot + "/lease"
	pendingRoot = shoalGCRoot + "/pending"
	reportPath  = shoalGCRoot + "/last-report.json"
)

// blobDir is the directory registry:2 removes to delete a blob.
func blobDir(d digest.Digest) string {
	hex := d.Encoded()
	return path.Join(blobsRoot, d.Algorithm().String(), hex[:2], hex)
}

func blobDataPath(d digest.Digest) string { return path.Join(blobDir(d), "data") }

func repoPath(repo string) string { return path.Join(repositoriesRoot, repo) }

func layerLinkPath(repo string, d digest.Digest) string {
	return path.Join(repoPath(repo), "_layers", d.Algorithm().String(), d.Encoded(), "link")
}

func revisionLinkPath(repo string, d digest.Digest) string {
	return path.Join(repoPath(repo), "_manifests", "revisions", d.Algorithm().String(), d.Encoded(), "link")
}

func tagDir(repo, tag string) string {
	return path.Join(repoPath(repo), "_manifests", "tags", tag)
}

func tagCurrentLinkPath(repo, tag string) string {
	return path.Join(tagDir(repo, tag), "current", "link")
}

func uploadDir(repo, id string) string { return path.Join(repoPath(repo), "_uploads", id) }

// readLink reads a registry:2 link file: the digest it points to.
func readLink(ctx context.Context, drv storage.Driver, p string) (digest.Digest, error) {
	b, err := drv.GetContent(ctx, p)
	if err != nil {
		return "", fmt.Errorf("reading link %s: %w", p, err)
	}
	d, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("parsing link %s: %w", p, err)
	}
	return d, nil
}

// isNotFound reports whether err means the path does not exist.
func isNotFound(err error) bool {
	var nf storage.PathNotFoundError
	return errors.As(err, &nf)
}

// linkKind says which part of a repository a link file belongs to.
type linkKind int

const (
	linkNone linkKind = iota
	linkLayer
	linkRevision
	linkTagCurrent
	uploadStartedAt
)

// repoFile is what classifyRepoPath extracts from a path under repositories/.
type repoFile struct {
	kind   linkKind
	repo   string
	digest digest.Digest // layer and revision links: the digest in the path
	tag    string        // tag links
	upload string        // upload id
}

// classifyRepoPath parses a file path under repositories/ into the registry:2
// object it stores. Repository names may contain slashes, so the name ends at
// the first component starting with an underscore, as registry:2 forbids
// such components in names.
func classifyRepoPath(p string) repoFile {
	rel, ok := strings.CutPrefix(p, repositoriesRoot+"/")
	if !ok {
		return repoFile{}
	}
	parts := strings.Split(rel, "/")
	i := 0
	for i < len(parts) && !strings.HasPrefix(parts[i], "_") {
		i++
	}
	if i == 0 || i == len(parts) {
		return repoFile{}
	}
	repo := strings.Join(parts[:i], "/")
	rest := parts[i:]
	switch {
	case rest[0] == "_layers" && len(rest) == 4 && rest[3] == "link":
		d := digest.NewDigestFromEncoded(digest.Algorithm(rest[1]), rest[2])
		if d.Validate() != nil {
			return repoFile{}
		}
		return repoFile{kind: linkLayer, repo: repo, digest: d}
	case rest[0] == "_manifests" && len(rest) == 5 && rest[1] == "revisions" && rest[4] == "link":
		d := digest.NewDigestFromEncoded(digest.Algorithm(rest[2]), rest[3])
		if d.Validate() != nil {
			return repoFile{}
		}
		return repoFile{kind: linkRevision, repo: repo, digest: d}
	case rest[0] == "_manifests" && len(rest) == 5 && rest[1] == "tags" && rest[3] == "current" && rest[4] == "link":
		return repoFile{kind: linkTagCurrent, repo: repo, tag: rest[2]}
	case rest[0] == "_uploads" && len(rest) == 3 && rest[2] == "startedat":
		return repoFile{kind: uploadStartedAt, repo: repo, upload: rest[1]}
	}
	return repoFile{}
}

// blobFromDataPath parses blobs/<alg>/<2 hex>/<hex>/data into its digest.
func blobFromDataPath(p string) (digest.Digest, bool) {
	rel, ok := strings.CutPrefix(p, blobsRoot+"/")
	if !ok {
		return "", false
	}
	parts := strings.Split(rel, "/")
	if len(parts) != 4 || parts[3] != "data" {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
	if d.Validate() != nil || !strings.HasPrefix(parts[2], parts[1]) {
		return "", false
	}
	return d, true
}
