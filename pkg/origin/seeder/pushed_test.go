package seeder

import (
	"testing"

	"github.com/shoal-dev/shoal/pkg/cluster"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// The first GetMetainfo after a push is answered from the metainfo the
// origin stored when the blob was pushed: no node reads the blob to
// compute it, owner or not.
func TestMetainfoOfAPushedBlobIsNotComputed(t *testing.T) {
	members := []cluster.Member{{Name: "a"}, {Name: "b"}}
	for _, self := range []string{"a", "b"} {
		d := newCountingDriver()
		blob, _ := blobOwnedBy(t, members, "a", 2*metainfo.DefaultPieceLength+99)
		dg := pushBlob(t, d, blob)
		s := startSeeder(t, d, func(c *Config, o *Options, _ string) {
			c.Replicas = 1
			o.Members = staticMembers{self: cluster.Member{Name: self}, members: members}
		})
		m := getMetainfo(t, s.client(), dg)
		if m.Size != int64(len(blob)) || m.NumPieces() != 3 {
			t.Fatalf("node %s: metainfo of %d bytes in %d pieces, want %d bytes in 3", self, m.Size, m.NumPieces(), len(blob))
		}
		if n := counter(t, s.m.metainfoComputed); n != 0 {
			t.Errorf("node %s: metainfo computed %v times after a push, want 0 (stored at the push)", self, n)
		}
		if self == "b" {
			// A non-owner neither caches nor prefetches: any read of the
			// blob would have been for the metainfo.
			if n := d.readsOf(dg); n != 0 {
				t.Errorf("non-owner read the blob %d times to answer GetMetainfo, want 0", n)
			}
		}
	}
}
