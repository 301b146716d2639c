package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/rendezvous"
)

const (
	testPieceLen = 64 << 10
	ociManifest  = "application/vnd.oci.image.manifest.v1+json"
)

// pushImage pushes a config and one layer under name:tag and returns the
// layer, its digest and the manifest's digest.
func pushImage(t *testing.T, o *testOrigin, name, tag string, layer []byte) (digest.Digest, digest.Digest) {
	t.Helper()
	cfgBlob := []byte(`{"architecture":"amd64","os":"linux"}`)
	cfgD := o.pushBlob(name, cfgBlob)
	layerD := o.pushBlob(name, layer)
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}]}`,
		ociManifest, cfgD, len(cfgBlob), layerD, len(layer))
	md := o.pushManifest(name, tag, ociManifest, []byte(manifest))
	return layerD, md
}

func expectStatus(t *testing.T, what string, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s: status %d, want %d; body %.300s", what, resp.StatusCode, want, body)
	}
}

func TestPullThroughMirrorFromSeeder(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(1<<20+12345, 1)
	layerD, md := pushImage(t, o, "library/app", "v1", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	a := startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, nil))

	resp, body := a.get("GET", "/v2/")
	expectStatus(t, "GET /v2/", resp, body, http.StatusOK)

	// dockerd: HEAD with the Accept types, then GET.
	accept := []string{"Accept", "application/vnd.docker.distribution.manifest.v2+json", "Accept", "application/vnd.docker.distribution.manifest.list.v2+json",
		"Accept", "application/vnd.oci.image.index.v1+json", "Accept", ociManifest}
	resp, body = a.get("HEAD", "/v2/library/app/manifests/v1", accept...)
	expectStatus(t, "HEAD manifest", resp, body, http.StatusOK)
	if got := resp.Header.Get("Docker-Content-Digest"); got != md.String() {
		t.Fatalf("HEAD manifest digest %q, want %s", got, md)
	}
	resp, body = a.get("GET", "/v2/library/app/manifests/v1", accept...)
	expectStatus(t, "GET manifest by tag", resp, body, http.StatusOK)
	if digest.FromBytes(body) != md || resp.Header.Get("Content-Type") != ociManifest {
		t.Fatalf("manifest by tag: digest %s type %q, want %s %q", digest.FromBytes(body), resp.Header.Get("Content-Type"), md, ociManifest)
	}
	// containerd: ?ns= names the registry it thinks it pulls from.
	resp, body = a.get("GET", "/v2/library/app/manifests/"+md.String()+"?ns=docker.io", accept...)
	expectStatus(t, "GET manifest by digest with ns", resp, body, http.StatusOK)
	if digest.FromBytes(body) != md {
		t.Fatal("manifest by digest: wrong content")
	}
	if hits := a.metric("shoal_agent_manifest_cache_requests_total", "result", "hit"); hits < 1 {
		t.Errorf("manifest cache hits = %v, want ≥ 1 (HEAD then GET by tag)", hits)
	}
	resp, body = a.get("GET", "/v2/library/app/tags/list")
	expectStatus(t, "tags list", resp, body, http.StatusOK)
	var tags struct{ Tags []string }
	if err := json.Unmarshal(body, &tags); err != nil || len(tags.Tags) != 1 || tags.Tags[0] != "v1" {
		t.Fatalf("tags list %s: %v", body, err)
	}
	resp, body = a.get("GET", "/v2/library/app/manifests/nope")
	expectStatus(t, "unknown tag", resp, body, http.StatusNotFound)

	resp, body = a.get("HEAD", "/v2/library/app/blobs/"+layerD.String())
	expectStatus(t, "HEAD blob", resp, body, http.StatusOK)
	if resp.ContentLength != int64(len(layer)) {
		t.Fatalf("HEAD blob Content-Length %d, want %d", resp.ContentLength, len(layer))
	}
	resp, body = a.get("GET", "/v2/library/app/blobs/"+layerD.String()+"?ns=docker.io")
	expectStatus(t, "GET blob", resp, body, http.StatusOK)
	if got := digest.FromBytes(body); got != layerD {
		t.Fatalf("blob through the mirror has digest %s, want %s", got, layerD)
	}
	if got := a.metric("shoal_agent_downloaded_bytes_total", "source", "origin"); got != float64(len(layer)) {
		t.Errorf("bytes from origin seeders = %v, want %d", got, len(layer))
	}
	if n := o.blobGETs.Load(); n != 0 {
		t.Errorf("the origin's registry API served %d blob GETs; blobs must come through the seeder", n)
	}

	// Cached once the download has checked the whole blob: served without
	// the seeder.
	eventually.True(t, "the download to complete", func() bool { return a.metric("shoal_agent_downloads_total", "result", "completed") == 1 })
	seeder.srv.Stop()
	resp, body = a.get("GET", "/v2/library/app/blobs/"+layerD.String())
	expectStatus(t, "GET cached blob", resp, body, http.StatusOK)
	if digest.FromBytes(body) != layerD {
		t.Fatal("cached blob: wrong content")
	}
	if hits := a.metric("shoal_agent_blob_cache_requests_total", "result", "hit"); hits != 1 {
		t.Errorf("blob cache hits = %v, want 1", hits)
	}

	// Not in the repository at the origin: refused before any cache lookup.
	resp, body = a.get("GET", "/v2/other/blobs/"+layerD.String())
	expectStatus(t, "blob of another repository", resp, body, http.StatusNotFound)
	if !strings.Contains(string(body), "BLOB_UNKNOWN") {
		t.Errorf("blob of another repository: body %s, want BLOB_UNKNOWN", body)
	}
}

func TestPushIsRefusedNamingTheOrigin(t *testing.T) {
	o := startOrigin(t)
	a := startAgent(t, testConfig(t, o.URL, nil, nil))
	for _, c := range []struct{ method, path string }{
		{"POST", "/v2/team/app/blobs/uploads/"},
		{"PATCH", "/v2/team/app/blobs/uploads/abc"},
		{"PUT", "/v2/team/app/manifests/v1"},
		{"DELETE", "/v2/team/app/manifests/v1"},
	} {
		resp, body := a.get(c.method, c.path)
		expectStatus(t, c.method+" "+c.path, resp, body, http.StatusMethodNotAllowed)
		if !strings.Contains(string(body), `"UNSUPPORTED"`) || !strings.Contains(string(body), o.URL) {
			t.Errorf("%s %s: body %s, want UNSUPPORTED naming %s", c.method, c.path, body, o.URL)
		}
	}
}

func TestRangeResume(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(700_000, 2)
	layerD := o.pushBlob("team/app", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	a := startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, nil))
	path := "/v2/team/app/blobs/" + layerD.String()

	// A resume from the middle of a piece, before anything is cached.
	resp, body := a.get("GET", path, "Range", "bytes=300001-")
	expectStatus(t, "resume", resp, body, http.StatusPartialContent)
	if string(body) != string(layer[300001:]) {
		t.Fatalf("resumed body: %d bytes, not the blob's tail", len(body))
	}
	if want := fmt.Sprintf("bytes 300001-%d/%d", len(layer)-1, len(layer)); resp.Header.Get("Content-Range") != want {
		t.Errorf("Content-Range %q, want %q", resp.Header.Get("Content-Range"), want)
	}
	resp, body = a.get("GET", path, "Range", "bytes=10-19")
	expectStatus(t, "closed range", resp, body, http.StatusPartialContent)
	if string(body) != string(layer[10:20]) {
		t.Fatal("closed range: wrong bytes")
	}
	resp, body = a.get("GET", path, "Range", "bytes=-5")
	expectStatus(t, "suffix range", resp, body, http.StatusPartialContent)
	if string(body) != string(layer[len(layer)-5:]) {
		t.Fatal("suffix range: wrong bytes")
	}
	resp, body = a.get("GET", path, "Range", fmt.Sprintf("bytes=%d-", len(layer)))
	expectStatus(t, "range past the end", resp, body, http.StatusRequestedRangeNotSatisfiable)
}

func pullBlob(t *testing.T, a *testAgent, name string, d digest.Digest) {
	t.Helper()
	resp, body := a.get("GET", "/v2/"+name+"/blobs/"+d.String())
	expectStatus(t, "GET blob from "+a.PeerID(), resp, body, http.StatusOK)
	if got := digest.FromBytes(body); got != d {
		t.Fatalf("agent %s served %d bytes with digest %s, want %s", a.PeerID(), len(body), got, d)
	}
}

func TestThreeAgentsShareThroughPeers(t *testing.T) {
	o := startOrigin(t)
	tr := startTracker(t)
	layer := randomBytes(2<<20, 3)
	layerD := o.pushBlob("team/app", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	seeder.announce(tr.addr, layerD, true)

	var agents []*testAgent
	for range 3 {
		agents = append(agents, startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, []string{tr.addr})))
	}
	pullBlob(t, agents[0], "team/app", layerD)
	// The first agent announces completion; the others find it.
	eventually.True(t, "the first agent's completed announce", func() bool {
		return agents[0].metric("shoal_agent_announces_total", "event", "completed", "result", "ok") >= 1
	})
	done := make(chan struct{})
	for _, a := range agents[1:] {
		go func() {
			defer func() { done <- struct{}{} }()
			pullBlob(t, a, "team/app", layerD)
		}()
	}
	<-done
	<-done
	for _, a := range agents[1:] {
		fromPeers := a.metric("shoal_agent_downloaded_bytes_total", "source", "peer")
		fromOrigin := a.metric("shoal_agent_downloaded_bytes_total", "source", "origin")
		if fromPeers < 0.75*float64(len(layer)) {
			t.Errorf("agent %s got %v bytes from peers and %v from the origin; want most from peers", a.PeerID(), fromPeers, fromOrigin)
		}
	}
	if up := agents[0].metric("shoal_agent_uploaded_bytes_total"); up == 0 {
		t.Error("the first agent uploaded nothing")
	}
	if sent := seeder.sent.Load(); sent > int64(2*len(layer)) {
		t.Errorf("the origin seeder sent %d bytes for a %d-byte layer pulled by 3 agents; want ≤ 2x", sent, len(layer))
	}
}

func TestCorruptPeerIsBlacklisted(t *testing.T) {
	o := startOrigin(t)
	tr := startTracker(t)
	layer := randomBytes(1<<20, 4)
	layerD := o.pushBlob("team/app", layer)
	honest := startSeeder(t, "origin-1", testPieceLen, false)
	honest.add(layer)
	honest.announce(tr.addr, layerD, true)
	evil := startSeeder(t, "evil-agent", testPieceLen, true)
	evil.add(layer)
	evil.announce(tr.addr, layerD, false)

	a := startAgent(t, testConfig(t, o.URL, []string{honest.addr}, []string{tr.addr}))
	pullBlob(t, a, "team/app", layerD)
	if n := a.metric("shoal_agent_pieces_rejected_total", "source", "peer"); n < 1 {
		t.Errorf("pieces rejected from peers = %v, want ≥ 1 (the corrupt agent was asked first)", n)
	}
	if n := a.metric("shoal_agent_peers_blacklisted_total", "reason", "corrupt"); n != 1 {
		t.Errorf("peers blacklisted as corrupt = %v, want 1", n)
	}
	if got := a.metric("shoal_agent_downloaded_bytes_total", "source", "origin"); got != float64(len(layer)) {
		t.Errorf("verified bytes from the origin = %v, want the whole layer (%d)", got, len(layer))
	}
}

func TestTrackerDownStillCompletes(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(1<<20, 5)
	layerD := o.pushBlob("team/app", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	// A tracker address nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	a := startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, []string{dead}))
	pullBlob(t, a, "team/app", layerD)
	if n := a.metric("shoal_agent_announces_total", "result", "failed"); n < 1 {
		t.Errorf("failed announces = %v, want ≥ 1", n)
	}
}

func TestSilentPeerDoesNotStallThePull(t *testing.T) {
	o := startOrigin(t)
	tr := startTracker(t)
	layer := randomBytes(1<<20, 6)
	layerD := o.pushBlob("team/app", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	seeder.announce(tr.addr, layerD, true)
	// Accepts connections and never says a word.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	silent := &testSeeder{t: t, id: "silent-agent", addr: ln.Addr().String()}
	silent.announce(tr.addr, layerD, false)

	a := startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, []string{tr.addr}))
	start := time.Now()
	pullBlob(t, a, "team/app", layerD)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("pull took %s with a silent peer; the dial timeout is 1s", d)
	}
}

// TestHungSeederIsHedged: the seeder first in rendezvous order for the
// blob accepts GetMetainfo and never answers (an origin stuck on its
// storage). The agent asks the next seeder after metainfoHedgeDelay
// instead of waiting out metainfoTimeout, and gives up on the hung call.
func TestHungSeederIsHedged(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(1<<20, 7)
	layerD := o.pushBlob("team/app", layer)
	s1 := startSeeder(t, "origin-1", testPieceLen, false)
	s2 := startSeeder(t, "origin-2", testPieceLen, false)
	s1.add(layer)
	s2.add(layer)
	first := map[string]*testSeeder{s1.addr: s1, s2.addr: s2}[rendezvous.Rank(layerD.String(), []string{s1.addr, s2.addr})[0]]
	first.hangMetainfo = true

	cfg := testConfig(t, o.URL, []string{s1.addr, s2.addr}, nil)
	cfg.Swarm.MetainfoTimeout = 10 * time.Minute
	cfg.Swarm.MetainfoHedgeDelay = 200 * time.Millisecond
	a := startAgent(t, cfg)
	// Far below metainfoTimeout: without the hedge this request times out.
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(a.url("/v2/team/app/blobs/" + layerD.String()))
	if err != nil {
		t.Fatalf("pull with the first seeder hung: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != layerD {
		t.Fatalf("pull with the first seeder hung: status %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
	// The hung call was cancelled once the other seeder answered.
	eventually.True(t, "the hung GetMetainfo to be cancelled", func() bool { return first.hungUp.Load() > 0 })
}

// TestSlowPiecesAreNeitherTimedOutNorStalled: the only seeder sends a
// piece in about 4 s, longer than pieceTimeout and stallTimeout, but its
// bytes keep coming. The agent neither cancels the request nor gives the
// download up: timeouts count from the last bytes, not the last piece.
func TestSlowPiecesAreNeitherTimedOutNorStalled(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(2*testPieceLen, 8) // two 64 KiB pieces
	layerD := o.pushBlob("team/app", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	seeder.setRate(16 << 10) // 16 KiB/s in 8 KiB chunks: 4 s a piece
	seeder.chunk = 8 << 10

	cfg := testConfig(t, o.URL, []string{seeder.addr}, nil)
	cfg.Swarm.PieceTimeout = 1500 * time.Millisecond
	cfg.Swarm.StallTimeout = 2 * time.Second
	cfg.Swarm.OriginDeferral = 0
	a := startAgent(t, cfg)
	pullBlob(t, a, "team/app", layerD)
	if n := seeder.aborted.Load(); n != 0 {
		t.Errorf("%d pieces cancelled mid-transfer while their bytes kept coming", n)
	}
	if n := seeder.requests.Load(); n != 2 {
		t.Errorf("the seeder was asked %d times for a 2-piece blob, want 2 (no re-request after a timeout)", n)
	}
}

// TestIngressLimit: the token bucket paces what an agent receives, with
// chunks as large as the protocol allows (1 MiB, above a tenth of a
// second's worth at this rate).
func TestIngressLimit(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(3<<20, 12)
	layerD := o.pushBlob("team/app", layer)
	seeder := startSeeder(t, "origin-1", 1<<20, false)
	seeder.chunk = 1 << 20
	seeder.add(layer)
	cfg := testConfig(t, o.URL, []string{seeder.addr}, nil)
	cfg.IngressLimit = 2 << 20
	a := startAgent(t, cfg)
	start := time.Now()
	pullBlob(t, a, "team/app", layerD)
	// 3 MiB at 2 MiB/s with a 1 MiB burst: at least a second.
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("3 MiB pulled in %s under a 2 MiB/s ingress limit", d)
	}
}

// TestCacheSurvivesRestart: a restarted agent serves what it cached
// without any seeder, and announces it for seeding again.
func TestCacheSurvivesRestart(t *testing.T) {
	o := startOrigin(t)
	tr := startTracker(t)
	layer := randomBytes(500_000, 13)
	layerD := o.pushBlob("team/app", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	cfg := testConfig(t, o.URL, []string{seeder.addr}, []string{tr.addr})
	a := startAgent(t, cfg)
	pullBlob(t, a, "team/app", layerD)
	eventually.True(t, "the download to complete", func() bool { return a.metric("shoal_agent_downloads_total", "result", "completed") == 1 })
	a.shutdown()
	seeder.srv.Stop()

	b := startAgent(t, cfg)
	pullBlob(t, b, "team/app", layerD)
	if hits := b.metric("shoal_agent_cache_hits_total"); hits != 1 {
		t.Errorf("cache hits after restart = %v, want 1", hits)
	}
	eventually.True(t, "the restarted agent's completed announce", func() bool {
		return b.metric("shoal_agent_announces_total", "event", "completed", "result", "ok") >= 1
	})
}

// TestEvictionKeepsTheQuota: past the quota the least recently used blob
// is evicted (and announced stopped); pulling it again downloads it again.
func TestEvictionKeepsTheQuota(t *testing.T) {
	o := startOrigin(t)
	tr := startTracker(t)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	var ds []digest.Digest
	for i := range 2 {
		layer := randomBytes(600_000, uint64(20+i))
		ds = append(ds, o.pushBlob("team/app", layer))
		seeder.add(layer)
	}
	cfg := testConfig(t, o.URL, []string{seeder.addr}, []string{tr.addr})
	cfg.CacheQuota = 1_000_000 // room for one of the two
	a := startAgent(t, cfg)
	completed := func(n float64) func() bool {
		return func() bool { return a.metric("shoal_agent_downloads_total", "result", "completed") == n }
	}
	pullBlob(t, a, "team/app", ds[0])
	eventually.True(t, "the first download", completed(1))
	pullBlob(t, a, "team/app", ds[1])
	eventually.True(t, "the second download", completed(2))
	if n := a.metric("shoal_agent_cache_blobs"); n != 1 {
		t.Errorf("%v blobs cached with room for one", n)
	}
	eventually.True(t, "the stopped announce of the evicted blob", func() bool {
		return a.metric("shoal_agent_announces_total", "event", "stopped", "result", "ok") >= 1
	})
	pullBlob(t, a, "team/app", ds[0])
	if n := a.metric("shoal_agent_cache_misses_total"); n != 3 {
		t.Errorf("cache misses = %v, want 3 (the evicted blob downloaded again)", n)
	}
}

// TestWithoutSeedersBlobsAreProxied: an agent configured without origin
// seeders still serves pulls, straight from the origin's registry API.
func TestWithoutSeedersBlobsAreProxied(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(200_000, 40)
	layerD := o.pushBlob("team/app", layer)
	a := startAgent(t, testConfig(t, o.URL, nil, nil))
	pullBlob(t, a, "team/app", layerD)
	resp, body := a.get("GET", "/v2/team/app/blobs/"+layerD.String(), "Range", "bytes=100-")
	expectStatus(t, "proxied range", resp, body, http.StatusPartialContent)
	if string(body) != string(layer[100:]) {
		t.Fatal("proxied range: wrong bytes")
	}
	if n := a.metric("shoal_agent_origin_proxy_bytes_total"); n < float64(len(layer)) {
		t.Errorf("proxied bytes = %v, want ≥ %d", n, len(layer))
	}
}
