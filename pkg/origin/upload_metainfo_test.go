package origin

import (
	"bytes"
	"context"
	"crypto/rand"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// A pushed blob's metainfo is stored with it, computed from the chunks as
// they arrived (pieces cut across chunk boundaries), equal to what the
// seeders would compute from the blob.
func TestPushStoresTheBlobsMetainfo(t *testing.T) {
	d := inmemory.New()
	_, e := newServerOn(t, d)
	for name, push := range map[string]func([]byte) digest.Digest{
		"monolithic": func(b []byte) digest.Digest { return e.pushBlob("team/app", b) },
		"chunked":    func(b []byte) digest.Digest { return e.pushChunked("team/app", b) },
	} {
		blob := make([]byte, 2*metainfo.DefaultPieceLength+4321)
		_, _ = rand.Read(blob)
		dg := push(blob)
		got, err := metainfo.Load(context.Background(), d, dg)
		if err != nil {
			t.Fatalf("%s push: no metainfo stored with the blob: %v", name, err)
		}
		want, err := metainfo.Compute(bytes.NewReader(blob), dg, int64(len(blob)), metainfo.PieceLengthFor(int64(len(blob))))
		if err != nil {
			t.Fatal(err)
		}
		if got.Size != want.Size || got.PieceLength != want.PieceLength || !slices.Equal(got.PieceHashes, want.PieceHashes) {
			t.Errorf("%s push: stored metainfo (%d bytes, %d pieces of %d) is not the blob's (%d bytes, %d pieces of %d) or has other hashes",
				name, got.Size, got.NumPieces(), got.PieceLength, want.Size, want.NumPieces(), want.PieceLength)
		}
	}
}
