package gc

import (
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

func TestGuardFollowsThePendingSets(t *testing.T) {
	ctx := context.Background()
	drv := inmemory.New()
	p := pusher{drv: drv}
	x := must[digest.Digest](t)(p.blob(ctx, "r", []byte("x")))
	y := must[digest.Digest](t)(p.blob(ctx, "r", []byte("y")))
	g := NewGuard(drv)
	check := func(want error, ds ...digest.Digest) {
		t.Helper()
		if err := g.Check(ctx, "r", ds, ds); !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("Check(%v) = %v, want %v", ds, err, want)
		}
	}
	check(nil, x, y)
	if err := writePendingSet(ctx, drv, 7, []digest.Digest{x, y}); err != nil {
		t.Fatal(err)
	}
	check(ErrBeingCollected, x)
	check(ErrBeingCollected, y)
	// The re-check spared y: the rewritten, smaller set is read again.
	if err := writePendingSet(ctx, drv, 7, []digest.Digest{x}); err != nil {
		t.Fatal(err)
	}
	check(ErrBeingCollected, x)
	check(nil, y)
	// A stale set of an earlier run counts too, until the next run clears it.
	if err := writePendingSet(ctx, drv, 6, []digest.Digest{y}); err != nil {
		t.Fatal(err)
	}
	check(ErrBeingCollected, y)
	for _, tok := range []uint64{6, 7} {
		if err := removePendingSet(ctx, drv, tok); err != nil {
			t.Fatal(err)
		}
	}
	check(nil, x, y)
	// Data or link gone: refused as well.
	if err := drv.Delete(ctx, blobDir(x)); err != nil {
		t.Fatal(err)
	}
	check(ErrBeingCollected, x)
	if err := drv.Delete(ctx, layerLinkPath("r", y)); err != nil {
		t.Fatal(err)
	}
	check(ErrBeingCollected, y)
}

func TestStorageDeleterDeleteManifestUntagsOnlyItsTags(t *testing.T) {
	ctx := context.Background()
	drv := inmemory.New()
	p := pusher{drv: drv}
	c := must[digest.Digest](t)(p.blob(ctx, "r", []byte("c")))
	m1 := must[digest.Digest](t)(p.manifest(ctx, "r", "a", imageManifest(c)))
	if _, err := p.manifest(ctx, "r", "b", imageManifest(c)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.manifest(ctx, "r", "other", imageManifest(c, c)); err != nil {
		t.Fatal(err)
	}
	if err := (StorageDeleter{Driver: drv}).DeleteManifest(ctx, "r", m1); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"a", "b"} {
		if _, err := drv.Stat(ctx, tagCurrentLinkPath("r", tag)); !isNotFound(err) {
			t.Errorf("tag %s of the deleted manifest remains: %v", tag, err)
		}
	}
	if _, err := drv.Stat(ctx, revisionLinkPath("r", m1)); !isNotFound(err) {
		t.Errorf("revision of the deleted manifest remains: %v", err)
	}
	if err := pull(ctx, drv, "r", "other"); err != nil {
		t.Errorf("other manifest's tag broken: %v", err)
	}
	// Deleting again is not an error.
	if err := (StorageDeleter{Driver: drv}).DeleteManifest(ctx, "r", m1); err != nil {
		t.Errorf("second delete: %v", err)
	}
}

// fakeAPI deletes like a registry server's handlers and records the calls.
type fakeAPI struct {
	StorageDeleter
	calls []string
}

func (f *fakeAPI) DeleteTag(ctx context.Context, repo, tag string) error {
	f.calls = append(f.calls, "tag "+repo+":"+tag)
	return f.Driver.Delete(ctx, tagDir(repo, tag))
}

func (f *fakeAPI) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	f.calls = append(f.calls, "manifest "+repo+"@"+d.String())
	if _, err := f.Driver.Stat(ctx, revisionLinkPath(repo, d)); err != nil {
		return errors.New("MANIFEST_UNKNOWN")
	}
	return f.StorageDeleter.DeleteManifest(ctx, repo, d)
}

func TestAPIDeleterIsConditionalAndIdempotent(t *testing.T) {
	ctx := context.Background()
	drv := inmemory.New()
	p := pusher{drv: drv}
	c := must[digest.Digest](t)(p.blob(ctx, "r", []byte("c")))
	m1 := must[digest.Digest](t)(p.manifest(ctx, "r", "t", imageManifest(c)))
	m2 := must[digest.Digest](t)(p.manifest(ctx, "r", "", imageManifest(c, c)))
	api := &fakeAPI{StorageDeleter: StorageDeleter{Driver: drv}}
	del := APIDeleter{Driver: drv, API: api}
	if err := del.DeleteTag(ctx, "r", "t", m2); !errors.Is(err, ErrTagMoved) {
		t.Errorf("tag pointing elsewhere: got %v, want ErrTagMoved", err)
	}
	if err := del.DeleteTag(ctx, "r", "t", m1); err != nil {
		t.Fatal(err)
	}
	if err := del.DeleteTag(ctx, "r", "t", m1); err != nil {
		t.Errorf("deleting a gone tag: %v", err)
	}
	if err := del.DeleteManifest(ctx, "r", m1); err != nil {
		t.Fatal(err)
	}
	if err := del.DeleteManifest(ctx, "r", m1); err != nil {
		t.Errorf("deleting a gone manifest: %v", err)
	}
	want := []string{"tag r:t", "manifest r@" + m1.String()}
	if len(api.calls) != len(want) || api.calls[0] != want[0] || api.calls[1] != want[1] {
		t.Errorf("server calls %v, want %v", api.calls, want)
	}
}
