package origin

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// A pushed blob's metainfo is stored with it, computed from the chunks as
// they arrived (pieces cut across chunk boundaries), equal to what the
// seeders would compute from the blob: chained, from the upload's one
// SHA-256.
func TestPushStoresTheBlobsMetainfo(t *testing.T) {
	d := inmemory.New()
	_, e := newServerOn(t, d)
	for name, push := range map[string]func([]byte) digest.Digest{
		"monolithic": func(b []byte) digest.Digest { return e.pushBlob("team/app", b) },
		"chunked":    func(b []byte) digest.Digest { return e.pushChunked("team/app", b) },
	} {
		blob := make([]byte, 2*metainfo.DefaultPieceLength+4321)
		_, _ = rand.Read(blob)
		expectStoredMetainfo(t, d, blob, push(blob), name+" push")
	}
}

// expectStoredMetainfo checks that the metainfo stored for blob (digest dg)
// is what the seeders would compute from it.
func expectStoredMetainfo(t *testing.T, d storage.Driver, blob []byte, dg digest.Digest, what string) {
	t.Helper()
	got, err := metainfo.Load(context.Background(), d, dg)
	if err != nil {
		t.Fatalf("%s: no metainfo stored with the blob: %v", what, err)
	}
	want, err := metainfo.Compute(bytes.NewReader(blob), dg, int64(len(blob)), metainfo.PieceLengthFor(int64(len(blob))))
	if err != nil {
		t.Fatal(err)
	}
	if want.Scheme != metainfo.Chained {
		t.Fatalf("%s: the seeders would compute %s metainfo for %s, want chained", what, want.Scheme, dg)
	}
	if got.Scheme != want.Scheme || got.Size != want.Size || got.PieceLength != want.PieceLength || !slices.Equal(got.PieceHashes, want.PieceHashes) {
		t.Errorf("%s: stored metainfo (%s, %d bytes, %d pieces of %d) is not the blob's (%s, %d bytes, %d pieces of %d) or has other hashes",
			what, got.Scheme, got.Size, got.NumPieces(), got.PieceLength, want.Scheme, want.Size, want.NumPieces(), want.PieceLength)
	}
}

// An upload that a node before chained piece hashes started (its state
// holds a per-piece hasher) finishes on a new node with the per-piece
// metainfo it started with.
func TestUploadStartedInTheOldStateFormatFinishes(t *testing.T) {
	d := inmemory.New()
	s, a := newServerOn(t, d)
	blob := make([]byte, 2*metainfo.DefaultPieceLength+999)
	_, _ = rand.Read(blob)
	dg := digest.FromBytes(blob)
	half := metainfo.DefaultPieceLength + 100

	loc := startSession(a, "team/app")
	resp := a.do(http.MethodPatch, loc, blob[:half], "Content-Range", fmt.Sprintf("0-%d", half-1))
	a.expect(resp, http.StatusAccepted)
	loc = resp.Header.Get("Location")
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	id := path.Base(u.Path)
	// The state as an older node saved it: a version 1 (per-piece)
	// piece hasher beside the upload's SHA-256.
	ctx := context.Background()
	st, err := s.loadUploadState(ctx, "team/app", id)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := metainfo.NewHasher(metainfo.PerPiece, metainfo.DefaultPieceLength)
	_, _ = old.Write(blob[:half])
	if st.Pieces, err = old.MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	if err := s.saveUploadState(ctx, "team/app", id, st); err != nil {
		t.Fatal(err)
	}

	resp = a.do(http.MethodPut, loc+"?digest="+dg.String(), blob[half:], "Content-Range", fmt.Sprintf("%d-%d", half, len(blob)-1))
	a.expect(resp, http.StatusCreated)
	got, err := metainfo.Load(ctx, d, dg)
	if err != nil {
		t.Fatalf("no metainfo stored for the upload in the old format: %v", err)
	}
	perPiece, _ := metainfo.NewHasher(metainfo.PerPiece, metainfo.DefaultPieceLength)
	_, _ = perPiece.Write(blob)
	want, err := perPiece.Metainfo(dg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Scheme != metainfo.PerPiece || !slices.Equal(got.PieceHashes, want.PieceHashes) {
		t.Errorf("the upload started in the old format stored %s metainfo, or other hashes; want the per-piece ones", got.Scheme)
	}
}

// An upload whose chunks go to two origin nodes in turn, each chunk
// spanning several of the buffers a chunk is copied in and none ending on a
// piece's boundary, and whose last bytes come with the closing PUT, stores
// the metainfo of the whole blob: each node goes on from the piece
// hasher's state the other saved.
func TestChunksOnTwoNodesStoreTheBlobsMetainfo(t *testing.T) {
	d := inmemory.New()
	_, a := newServerOn(t, d)
	_, b := newServerOn(t, d)
	blob := make([]byte, 12<<20+(chunkBuffers<<20)+4321) // cut below at 3 MiB and chunkBuffers+5 MiB
	_, _ = rand.Read(blob)
	dg := digest.FromBytes(blob)

	loc := startSession(a, "team/app")
	cuts := []int{0, 3<<20 + 17, (chunkBuffers+5)<<20 + 3, len(blob) - 1000, len(blob)}
	nodes := []exchange{a, b, a, b}
	for i, node := range nodes {
		start, end := cuts[i], cuts[i+1]
		method, target, status := http.MethodPatch, loc, http.StatusAccepted
		if i == len(nodes)-1 {
			method, target, status = http.MethodPut, loc+"?digest="+dg.String(), http.StatusCreated
		}
		resp := node.do(method, target, blob[start:end], "Content-Range", fmt.Sprintf("%d-%d", start, end-1))
		node.expect(resp, status)
		loc = resp.Header.Get("Location")
	}

	expectStoredMetainfo(t, d, blob, dg, "chunks on two nodes")
}
