package agent

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkPull measures one agent pulling a 256 MiB layer with 4 MiB
// pieces through the mirror: cold (from the in-memory test seeder, every
// piece verified and written to the cache) and warm (from the cache),
// beside the same GET from the origin directly.
// Memory is not reported: the fixtures hold the layer several times over
// in this process; measure RSS on a peer-agent process instead.
//
//	go test -run '^$' -bench Pull -benchtime 3x ./pkg/peer/agent/
func BenchmarkPull(b *testing.B) {
	const size = 256 << 20
	o := startOrigin(b)
	layer := randomBytes(size, 11)
	d := o.pushBlob("team/app", layer)
	seeder := startSeeder(b, "origin-1", 4<<20, false)
	seeder.add(layer)
	pull := func(b *testing.B, a *testAgent) {
		resp, err := http.Get(a.url("/v2/team/app/blobs/" + d.String()))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			b.Fatalf("pulled %d bytes: %v", n, err)
		}
	}
	b.Run("origin-direct", func(b *testing.B) {
		// The same layer straight from the origin's registry API, for
		// comparison (no verification, no cache).
		b.SetBytes(size)
		for b.Loop() {
			resp, err := http.Get(o.URL + "/v2/team/app/blobs/" + d.String())
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if n != size {
				b.Fatalf("pulled %d bytes", n)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			a := startAgent(b, testConfig(b, o.URL, []string{seeder.addr}, nil))
			b.StartTimer()
			pull(b, a)
			b.StopTimer()
			a.shutdown()
			b.StartTimer()
		}
	})
	b.Run("warm", func(b *testing.B) {
		a := startAgent(b, testConfig(b, o.URL, []string{seeder.addr}, nil))
		pull(b, a)
		b.SetBytes(size)
		for b.Loop() {
			pull(b, a)
		}
	})
}
