package seeder

import (
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// BenchmarkExchangeFromCache downloads a 64 MiB blob over loopback gRPC
// from an owner's warm cache, one stream with every piece requested at once.
func BenchmarkExchangeFromCache(b *testing.B) {
	d := inmemory.New()
	blob, _ := randomBlob(b, 64<<20)
	dg := putBlob(b, d, blob)
	s := startSeeder(b, d, nil)
	m := getMetainfo(b, s.client(), dg)
	fetchAll(b, s.client(), m) // warm the cache
	b.SetBytes(int64(len(blob)))
	for b.Loop() {
		if got := fetchAll(b, s.client(), m); len(got) != len(blob) {
			b.Fatalf("got %d bytes", len(got))
		}
	}
}
