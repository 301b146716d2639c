package gc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/storage"
)

func testConfig() Config {
	c := DefaultConfig()
	c.Grace = Duration(time.Hour)
	c.LeaseTTL = Duration(time.Minute)
	c.BatchSize = 3
	return c
}

func newTestRunner(t testing.TB, drv *agedDriver, cfg Config, holder string) *Runner {
	t.Helper()
	r, err := NewRunner(drv, cfg, RunnerOptions{Holder: holder, LeaseSettle: 5 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sweepFixture is a store with every kind of object mark-and-sweep treats
// differently, all older than the grace period unless said otherwise.
type sweepFixture struct {
	kept, swept []digest.Digest
	youngOrphan digest.Digest
	sweptLinks  []string
	keptLinks   []string
	oldUpload   string
	newUpload   string
}

func buildSweepFixture(t *testing.T, drv *agedDriver) sweepFixture {
	ctx := context.Background()
	p := pusher{drv: drv}
	var f sweepFixture
	blob := func(repo, s string) digest.Digest { return must[digest.Digest](t)(p.blob(ctx, repo, []byte(s))) }
	man := func(repo, tag string, m []byte) digest.Digest {
		return must[digest.Digest](t)(p.manifest(ctx, repo, tag, m))
	}

	// An image in two repositories (the second by mount), tagged.
	cfg, l1, l2 := blob("a", "config-a"), blob("a", "layer-1"), blob("a", "layer-2")
	imgA := man("a", "v1", imageManifest(cfg, l1, l2))
	if err := p.mount(ctx, "b/nested", "a", l1); err != nil {
		t.Fatal(err)
	}
	cfgB := blob("b/nested", "config-b")
	imgB := man("b/nested", "latest", imageManifest(cfgB, l1))

	// A multi-arch index whose children are untagged; a referrer of it.
	cc1, lc1 := blob("multi", "config-amd64"), blob("multi", "layer-amd64")
	cc2, lc2 := blob("multi", "config-arm64"), blob("multi", "layer-arm64")
	ch1 := man("multi", "", imageManifest(cc1, lc1))
	ch2 := man("multi", "", imageManifest(cc2, lc2))
	idx := man("multi", "1.0", indexManifest(ch1, ch2))
	sbomCfg, sbom := blob("multi", "sbom-config"), blob("multi", "sbom-layer")
	ref := man("multi", "", referrerManifest(idx, sbomCfg, sbom))

	// An untagged manifest that registry:2 keeps with --delete-untagged=false.
	ucfg := blob("a", "config-untagged")
	untagged := man("a", "", imageManifest(ucfg, l2))

	// A manifest deleted through the API: its own layers go with it.
	dcfg, dl := blob("gone", "config-deleted"), blob("gone", "layer-deleted")
	del := man("gone", "old", imageManifest(dcfg, dl))
	if err := (StorageDeleter{Driver: drv}).DeleteManifest(ctx, "gone", del); err != nil {
		t.Fatal(err)
	}
	// A layer uploaded and linked, never referenced, long ago.
	orphan := blob("a", "orphan-layer")
	// The same, but younger than the grace period: a push in progress.
	f.youngOrphan = blob("a", "young-orphan")
	drv.setAge(blobDir(f.youngOrphan), 0)
	drv.setAge(path.Dir(layerLinkPath("a", f.youngOrphan)), 0)
	// An old blob mounted a moment ago: the link is young, so it stays.
	mounted := blob("gone", "old-but-just-mounted")
	drv.setAge(path.Dir(layerLinkPath("gone", mounted)), 0)

	// A link to a blob that is not in the store at all (registry:2's GC
	// leaves such links behind in repositories it does not enumerate).
	ghost := digest.FromString("ghost")
	must[struct{}](t)(struct{}{}, drv.PutContent(ctx, layerLinkPath("a", ghost), []byte(ghost)))

	// Uploads: one abandoned, one in progress.
	f.oldUpload, f.newUpload = uploadDir("a", "old-session"), uploadDir("a", "new-session")
	must[struct{}](t)(struct{}{}, drv.PutContent(ctx, f.oldUpload+"/startedat", []byte(time.Now().Add(-200*time.Hour).Format(time.RFC3339))))
	must[struct{}](t)(struct{}{}, drv.PutContent(ctx, f.oldUpload+"/data", []byte("partial")))
	must[struct{}](t)(struct{}{}, drv.PutContent(ctx, f.newUpload+"/startedat", []byte(time.Now().Add(-time.Hour).Format(time.RFC3339))))

	f.kept = []digest.Digest{cfg, l1, l2, imgA, cfgB, imgB, cc1, lc1, cc2, lc2, ch1, ch2, idx, sbomCfg, sbom, ref, ucfg, untagged, f.youngOrphan, mounted}
	f.swept = []digest.Digest{dcfg, dl, del, orphan}
	f.sweptLinks = []string{layerLinkPath("gone", dcfg), layerLinkPath("gone", dl), layerLinkPath("a", orphan), layerLinkPath("a", ghost)}
	f.keptLinks = []string{layerLinkPath("a", f.youngOrphan), layerLinkPath("gone", mounted), layerLinkPath("b/nested", l1)}
	return f
}

func TestMarkAndSweepKeepsExactlyTheReachableBlobs(t *testing.T) {
	ctx := context.Background()
	for _, dry := range []bool{true, false} {
		t.Run(map[bool]string{true: "dry run", false: "delete"}[dry], func(t *testing.T) {
			drv := newAged(48 * time.Hour)
			f := buildSweepFixture(t, drv)
			// Every blob has its piece metainfo stored, as after a push.
			for _, d := range append(slices.Clone(f.kept), f.swept...) {
				if err := drv.PutContent(ctx, metainfo.StoragePath(d), []byte("metainfo of "+d)); err != nil {
					t.Fatal(err)
				}
			}
			before := blobsIn(t, drv)
			rep, err := newTestRunner(t, drv, testConfig(), "node-1").Run(ctx, RunOptions{DryRun: dry})
			if err != nil {
				t.Fatal(err)
			}
			var reported []digest.Digest
			for _, b := range rep.Blobs {
				reported = append(reported, b.Digest)
			}
			want := slices.Clone(f.swept)
			slices.Sort(want)
			slices.Sort(reported)
			if !slices.Equal(reported, want) {
				t.Errorf("reported blobs:\n got %v\nwant %v", reported, want)
			}
			if rep.BytesFreed == 0 {
				t.Errorf("no bytes reported freed")
			}
			after := blobsIn(t, drv)
			for _, d := range f.kept {
				if !after[d] {
					t.Errorf("reachable or young blob %s was deleted", d)
				}
			}
			for _, d := range f.swept {
				if after[d] == !dry {
					t.Errorf("blob %s: present=%v after a run with dryRun=%v", d, after[d], dry)
				}
				if _, err := drv.Stat(ctx, metainfo.StoragePath(d)); isNotFound(err) == dry {
					t.Errorf("metainfo of swept blob %s: err=%v after a run with dryRun=%v", d, err, dry)
				}
			}
			for _, d := range f.kept {
				if _, err := drv.Stat(ctx, metainfo.StoragePath(d)); err != nil {
					t.Errorf("metainfo of kept blob %s must stay: %v", d, err)
				}
			}
			if dry && len(after) != len(before) {
				t.Errorf("dry run changed the blob store: %d -> %d blobs", len(before), len(after))
			}
			for _, l := range f.sweptLinks {
				if _, err := drv.Stat(ctx, l); isNotFound(err) == dry {
					t.Errorf("layer link %s: err=%v after dryRun=%v", l, err, dry)
				}
			}
			for _, l := range f.keptLinks {
				if _, err := drv.Stat(ctx, l); err != nil {
					t.Errorf("layer link %s must stay: %v", l, err)
				}
			}
			if _, err := drv.Stat(ctx, f.oldUpload+"/data"); isNotFound(err) == dry {
				t.Errorf("abandoned upload: err=%v after dryRun=%v", err, dry)
			}
			if _, err := drv.Stat(ctx, f.newUpload+"/startedat"); err != nil {
				t.Errorf("upload in progress purged: %v", err)
			}
			if len(rep.Uploads) != 1 {
				t.Errorf("want 1 upload purged, got %+v", rep.Uploads)
			}
			for _, repo := range []string{"a", "b/nested", "multi"} {
				for _, tag := range map[string][]string{"a": {"v1"}, "b/nested": {"latest"}, "multi": {"1.0"}}[repo] {
					if err := pull(ctx, drv, repo, tag); err != nil {
						t.Errorf("pull %s:%s after gc: %v", repo, tag, err)
					}
				}
			}
			if m := pendingSetsIn(t, drv); len(m) > 0 {
				t.Errorf("pending sets left behind: %v", m)
			}
			last, err := newTestRunner(t, drv, testConfig(), "node-2").LastReport(ctx)
			if err != nil || last == nil || last.Token != rep.Token {
				t.Errorf("last report not saved to storage: %+v, %v", last, err)
			}
		})
	}
}

func TestRetentionThroughRunner(t *testing.T) {
	ctx := context.Background()
	drv := newAged(48 * time.Hour)
	p := pusher{drv: drv}
	ages := map[string]int{"b1": 1, "b2": 2, "b3": 3, "b4": 40, "latest": 90}
	shared := must[digest.Digest](t)(p.blob(ctx, "ci/app", []byte("shared-layer")))
	own := map[string]digest.Digest{}
	for tag, days := range ages {
		l := must[digest.Digest](t)(p.blob(ctx, "ci/app", []byte("layer-"+tag)))
		c := must[digest.Digest](t)(p.blob(ctx, "ci/app", []byte("config-"+tag)))
		d := must[digest.Digest](t)(p.manifest(ctx, "ci/app", tag, imageManifest(c, shared, l)))
		own[tag] = l
		age := time.Duration(days) * 24 * time.Hour
		drv.setAge(path.Dir(tagCurrentLinkPath("ci/app", tag)), age)
		drv.setAge(path.Dir(revisionLinkPath("ci/app", d)), age)
	}
	cfg := testConfig()
	cfg.Rules = []Rule{{Repositories: "ci/*", KeepLast: 2, MaxAge: Duration(30 * 24 * time.Hour), KeepTags: []string{"latest"}}}
	rep, err := newTestRunner(t, drv, cfg, "n").Run(ctx, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, td := range rep.Tags {
		tags = append(tags, td.Tag)
	}
	if !slices.Equal(tags, []string{"b4"}) || len(rep.Manifests) != 1 {
		t.Fatalf("want exactly tag b4 and its manifest deleted, got tags %v manifests %+v", tags, rep.Manifests)
	}
	after := blobsIn(t, drv)
	if after[own["b4"]] {
		t.Errorf("layer only b4 used survived")
	}
	for tag := range ages {
		if tag == "b4" {
			if err := pull(ctx, drv, "ci/app", tag); err == nil {
				t.Errorf("deleted tag b4 still pulls")
			}
			continue
		}
		if err := pull(ctx, drv, "ci/app", tag); err != nil {
			t.Errorf("pull ci/app:%s: %v", tag, err)
		}
	}
}

func TestRetentionSkipsTagMovedAfterPlanning(t *testing.T) {
	ctx := context.Background()
	drv := newAged(48 * time.Hour)
	p := pusher{drv: drv}
	c := must[digest.Digest](t)(p.blob(ctx, "r", []byte("c")))
	old := must[digest.Digest](t)(p.manifest(ctx, "r", "t", imageManifest(c)))
	moved := must[digest.Digest](t)(p.manifest(ctx, "r", "", imageManifest(c, c)))
	// The tag moved to another manifest after the plan was made.
	if err := drv.PutContent(ctx, tagCurrentLinkPath("r", "t"), []byte(moved)); err != nil {
		t.Fatal(err)
	}
	err := StorageDeleter{Driver: drv}.DeleteTag(ctx, "r", "t", old)
	if !errors.Is(err, ErrTagMoved) {
		t.Fatalf("want ErrTagMoved, got %v", err)
	}
	if err := pull(ctx, drv, "r", "t"); err != nil {
		t.Errorf("moved tag no longer pulls: %v", err)
	}
}

func pendingSetsIn(t testing.TB, drv storage.Driver) []string {
	t.Helper()
	var out []string
	if err := walkFiles(context.Background(), drv, pendingRoot, func(fi storage.FileInfo) error {
		out = append(out, fi.Path())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
