package gc

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// Inventory is what one walk of repositories/ found.
type Inventory struct {
	Repos map[string]*RepoInventory
}

// RepoInventory is one repository's links and uploads.
type RepoInventory struct {
	Name string
	// Tags maps a tag to its current link's target and write time.
	Tags map[string]Link
	// Revisions maps a manifest revision to its link's write time.
	Revisions map[digest.Digest]time.Time
	// Layers maps a blob linked into the repository to its link's write time.
	Layers map[digest.Digest]time.Time
	// Uploads are the upload session ids that have a startedat file.
	Uploads []string
}

// Link is a link file's target and write time.
type Link struct {
	Digest  digest.Digest
	ModTime time.Time
}

func (inv *Inventory) repo(name string) *RepoInventory {
	r := inv.Repos[name]
	if r == nil {
		r = &RepoInventory{Name: name, Tags: map[string]Link{}, Revisions: map[digest.Digest]time.Time{}, Layers: map[digest.Digest]time.Time{}}
		inv.Repos[name] = r
	}
	return r
}

// RepoNames returns the repositories in name order.
func (inv *Inventory) RepoNames() []string {
	names := make([]string, 0, len(inv.Repos))
	for n := range inv.Repos {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// readInventory walks repositories/ once. Tag links are read (their target
// is not in their path); revision and layer links are not, since registry:2
// names them after the digest they hold.
func readInventory(ctx context.Context, drv storage.Driver) (*Inventory, error) {
	inv := &Inventory{Repos: map[string]*RepoInventory{}}
	err := walkFiles(ctx, drv, repositoriesRoot, func(fi storage.FileInfo) error {
		f := classifyRepoPath(fi.Path())
		switch f.kind {
		case linkLayer:
			inv.repo(f.repo).Layers[f.digest] = fi.ModTime()
		case linkRevision:
			inv.repo(f.repo).Revisions[f.digest] = fi.ModTime()
		case linkTagCurrent:
			d, err := readLink(ctx, drv, fi.Path())
			if isNotFound(err) {
				return nil // untagged while we walked
			}
			if err != nil {
				return err
			}
			inv.repo(f.repo).Tags[f.tag] = Link{Digest: d, ModTime: fi.ModTime()}
		case uploadStartedAt:
			r := inv.repo(f.repo)
			r.Uploads = append(r.Uploads, f.upload)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading repositories: %w", err)
	}
	return inv, nil
}

// manifestReader reads and parses manifests by digest, once each: the same
// manifest is usually linked into many repositories.
type manifestReader struct {
	drv   storage.Driver
	cache map[digest.Digest]ManifestRefs
}

func newManifestReader(drv storage.Driver) *manifestReader {
	return &manifestReader{drv: drv, cache: map[digest.Digest]ManifestRefs{}}
}

// errManifestMissing says a revision link points at blob data that is not
// there. registry:2 skips such revisions when it marks, and so does GC.
var errManifestMissing = fmt.Errorf("manifest blob data missing")

func (m *manifestReader) refs(ctx context.Context, d digest.Digest) (ManifestRefs, error) {
	if r, ok := m.cache[d]; ok {
		return r, nil
	}
	b, err := m.drv.GetContent(ctx, blobDataPath(d))
	if isNotFound(err) {
		return ManifestRefs{}, fmt.Errorf("reading manifest %s: %w", d, errManifestMissing)
	}
	if err != nil {
		return ManifestRefs{}, fmt.Errorf("reading manifest %s: %w", d, err)
	}
	r, err := ParseManifest(b)
	if err != nil {
		return ManifestRefs{}, fmt.Errorf("manifest %s: %w", d, err)
	}
	m.cache[d] = r
	return r, nil
}
