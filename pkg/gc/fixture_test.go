package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// agedDriver makes files look older than they are: the in-memory driver
// stamps writes with the wall clock, and GC decides on ages.
type agedDriver struct {
	storage.Driver
	mu sync.Mutex
	// age of the files under a prefix; the longest matching prefix wins.
	ages       map[string]time.Duration
	defaultAge time.Duration
}

func newAged(defaultAge time.Duration) *agedDriver {
	return &agedDriver{Driver: inmemory.New(), ages: map[string]time.Duration{}, defaultAge: defaultAge}
}

func (a *agedDriver) setAge(prefix string, age time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ages[prefix] = age
}

func (a *agedDriver) age(p string) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	best, age := -1, a.defaultAge
	for prefix, d := range a.ages {
		if (p == prefix || strings.HasPrefix(p, prefix+"/")) && len(prefix) > best {
			best, age = len(prefix), d
		}
	}
	return age
}

type agedInfo struct {
	storage.FileInfo
	mod time.Time
}

func (i agedInfo) ModTime() time.Time { return i.mod }

func (a *agedDriver) wrap(fi storage.FileInfo) storage.FileInfo {
	return agedInfo{FileInfo: fi, mod: fi.ModTime().Add(-a.age(fi.Path()))}
}

func (a *agedDriver) Stat(ctx context.Context, p string) (storage.FileInfo, error) {
	fi, err := a.Driver.Stat(ctx, p)
	if err != nil {
		return nil, err
	}
	return a.wrap(fi), nil
}

func (a *agedDriver) Walk(ctx context.Context, p string, f storage.WalkFn, opts ...func(*storage.WalkOptions)) error {
	return storage.WalkFallback(ctx, a, p, f, opts...)
}

// pusher writes images the way the origin must: blob data, then the link,
// then CheckReferences; manifest data, revision link, CheckReferences, and
// only then the tag.
type pusher struct {
	drv storage.Driver
}

var errRetry = errors.New("push must be retried")

func (p pusher) blob(ctx context.Context, repo string, content []byte) (digest.Digest, error) {
	d := digest.FromBytes(content)
	if _, err := p.drv.Stat(ctx, blobDataPath(d)); isNotFound(err) {
		if err := p.drv.PutContent(ctx, blobDataPath(d), content); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	return d, p.link(ctx, repo, d)
}

// link links an existing blob into repo: the second half of an upload, or
// a cross-repository mount.
func (p pusher) link(ctx context.Context, repo string, d digest.Digest) error {
	if err := p.drv.PutContent(ctx, layerLinkPath(repo, d), []byte(d)); err != nil {
		return err
	}
	if err := CheckReferences(ctx, p.drv, repo, []digest.Digest{d}, []digest.Digest{d}); err != nil {
		return fmt.Errorf("%w: %w", errRetry, err)
	}
	return nil
}

func (p pusher) mount(ctx context.Context, repo, from string, d digest.Digest) error {
	if _, err := p.drv.Stat(ctx, layerLinkPath(from, d)); err != nil {
		return fmt.Errorf("%w: mount source: %w", errRetry, err)
	}
	if _, err := p.drv.Stat(ctx, blobDataPath(d)); err != nil {
		return fmt.Errorf("%w: mount source data: %w", errRetry, err)
	}
	return p.link(ctx, repo, d)
}

// manifest pushes m to repo (and tags it when tag is not empty).
func (p pusher) manifest(ctx context.Context, repo, tag string, m []byte) (digest.Digest, error) {
	refs, err := ParseManifest(m)
	if err != nil {
		return "", err
	}
	for _, b := range refs.Blobs {
		if _, err := p.drv.Stat(ctx, layerLinkPath(repo, b)); err != nil {
			return "", fmt.Errorf("%w: blob %s unknown in %s", errRetry, b, repo)
		}
		if _, err := p.drv.Stat(ctx, blobDataPath(b)); err != nil {
			return "", fmt.Errorf("%w: blob %s data missing", errRetry, b)
		}
	}
	for _, c := range refs.Children {
		if _, err := p.drv.Stat(ctx, revisionLinkPath(repo, c)); err != nil {
			return "", fmt.Errorf("%w: child manifest %s unknown in %s", errRetry, c, repo)
		}
	}
	d := digest.FromBytes(m)
	if _, err := p.drv.Stat(ctx, blobDataPath(d)); isNotFound(err) {
		if err := p.drv.PutContent(ctx, blobDataPath(d), m); err != nil {
			return "", err
		}
	}
	if err := p.drv.PutContent(ctx, revisionLinkPath(repo, d), []byte(d)); err != nil {
		return "", err
	}
	all := append(append([]digest.Digest{d}, refs.Blobs...), refs.Children...)
	if err := CheckReferences(ctx, p.drv, repo, nil, all); err != nil {
		_ = p.drv.Delete(ctx, revisionLinkPath(repo, d))
		return "", fmt.Errorf("%w: %w", errRetry, err)
	}
	if tag != "" {
		if err := p.drv.PutContent(ctx, tagCurrentLinkPath(repo, tag), []byte(d)); err != nil {
			return "", err
		}
		idx := path.Join(tagDir(repo, tag), "index", d.Algorithm().String(), d.Encoded(), "link")
		if err := p.drv.PutContent(ctx, idx, []byte(d)); err != nil {
			return "", err
		}
	}
	return d, nil
}

func imageManifest(config digest.Digest, layers ...digest.Digest) []byte {
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     v1.MediaTypeImageManifest,
		"config":        v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: config, Size: 1},
	}
	var ls []v1.Descriptor
	for _, l := range layers {
		ls = append(ls, v1.Descriptor{MediaType: v1.MediaTypeImageLayer, Digest: l, Size: 1})
	}
	m["layers"] = ls
	b, _ := json.Marshal(m)
	return b
}

func indexManifest(children ...digest.Digest) []byte {
	var ms []v1.Descriptor
	for _, c := range children {
		ms = append(ms, v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: c, Size: 1})
	}
	b, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": v1.MediaTypeImageIndex, "manifests": ms})
	return b
}

func referrerManifest(subject, config digest.Digest, layers ...digest.Digest) []byte {
	var m map[string]any
	_ = json.Unmarshal(imageManifest(config, layers...), &m)
	m["subject"] = v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: subject, Size: 1}
	m["artifactType"] = "application/vnd.example.sbom"
	b, _ := json.Marshal(m)
	return b
}

// pull checks that a tag resolves and every blob it needs is there, as a
// client's pull would.
func pull(ctx context.Context, drv storage.Driver, repo, tag string) error {
	d, err := readLink(ctx, drv, tagCurrentLinkPath(repo, tag))
	if err != nil {
		return err
	}
	return pullDigest(ctx, drv, repo, d)
}

func pullDigest(ctx context.Context, drv storage.Driver, repo string, d digest.Digest) error {
	if _, err := drv.Stat(ctx, revisionLinkPath(repo, d)); err != nil {
		return fmt.Errorf("manifest %s of %s: %w", d, repo, err)
	}
	b, err := drv.GetContent(ctx, blobDataPath(d))
	if err != nil {
		return fmt.Errorf("manifest %s data: %w", d, err)
	}
	refs, err := ParseManifest(b)
	if err != nil {
		return err
	}
	for _, x := range refs.Blobs {
		if _, err := drv.Stat(ctx, layerLinkPath(repo, x)); err != nil {
			return fmt.Errorf("blob %s not linked in %s: %w", x, repo, err)
		}
		if _, err := drv.Stat(ctx, blobDataPath(x)); err != nil {
			return fmt.Errorf("blob %s of %s@%s lost: %w", x, repo, d, err)
		}
	}
	for _, c := range refs.Children {
		if err := pullDigest(ctx, drv, repo, c); err != nil {
			return err
		}
	}
	return nil
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// blobsIn lists the blob store.
func blobsIn(t testing.TB, drv storage.Driver) map[digest.Digest]bool {
	t.Helper()
	out := map[digest.Digest]bool{}
	err := walkFiles(context.Background(), drv, blobsRoot, func(fi storage.FileInfo) error {
		if d, ok := blobFromDataPath(fi.Path()); ok {
			out[d] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
