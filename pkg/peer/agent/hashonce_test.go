package agent

import (
	"testing"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// A blob with chained metainfo is hashed once, piece by piece as it
// arrives: the agent runs no whole-blob pass (nothing counted in
// shoal_agent_blob_hashed_bytes_total). A blob with per-piece metainfo
// (what origins served before chained hashes) still gets the pass, as
// before.
func TestChainedMetainfoSkipsTheBlobPass(t *testing.T) {
	o := startOrigin(t)
	chainedLayer := randomBytes(1<<20+777, 41)
	perPieceLayer := randomBytes(1<<20+555, 42)
	chainedD := o.pushBlob("team/app", chainedLayer)
	perPieceD := o.pushBlob("team/app", perPieceLayer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	if m := seeder.add(chainedLayer); m.Scheme != metainfo.Chained {
		t.Fatalf("the seeder's metainfo for a sha256 blob is %s, want chained", m.Scheme)
	}
	h, err := metainfo.NewHasher(metainfo.PerPiece, testPieceLen)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = h.Write(perPieceLayer)
	old, err := h.Metainfo(perPieceD)
	if err != nil {
		t.Fatal(err)
	}
	seeder.addAs(perPieceD, perPieceLayer, old)
	a := startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, nil))

	pullBlob(t, a, "team/app", chainedD)
	eventually.True(t, "the chained blob's download to complete", func() bool {
		return a.metric("shoal_agent_downloads_total", "result", "completed") >= 1
	})
	if n := a.metric("shoal_agent_blob_hashed_bytes_total"); n != 0 {
		t.Fatalf("the agent hashed %v bytes of a blob with chained metainfo again, want none", n)
	}
	if n := a.metric("shoal_agent_pieces_verified_total"); n < float64(metainfo.NumPieces(int64(len(chainedLayer)), testPieceLen)) {
		t.Fatalf("%v pieces verified, want every piece of the blob", n)
	}

	pullBlob(t, a, "team/app", perPieceD)
	eventually.True(t, "the per-piece blob's download to complete", func() bool {
		return a.metric("shoal_agent_downloads_total", "result", "completed") >= 2
	})
	if n := a.metric("shoal_agent_blob_hashed_bytes_total"); n != float64(len(perPieceLayer)) {
		t.Fatalf("the agent hashed %v bytes of a blob with per-piece metainfo against its digest, want %d", n, len(perPieceLayer))
	}
}
