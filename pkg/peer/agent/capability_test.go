package agent

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

func otherKey(t *testing.T) *auth.Key {
	t.Helper()
	k, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestAgentServesPeersOnlyAgainstACapability: another host that may not
// pull a blob can neither get its metainfo or pieces from an agent that
// holds it, nor learn whether it does.
func TestAgentServesPeersOnlyAgainstACapability(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(300_000, 21)
	layerD, _ := pushImage(t, o, "team/app", "v1", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	a := startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, nil))
	pullBlob(t, a, "team/app", layerD)
	eventually.True(t, "the download to complete", func() bool { return a.metric("shoal_agent_downloads_total", "result", "completed") == 1 })
	if n := seeder.denied.Load(); n != 0 {
		t.Errorf("the seeder refused %d of the agent's calls for want of a capability, want 0", n)
	}

	conn, err := grpc.NewClient(a.PeerAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := peerpb.NewPeerClient(conn)
	// ask calls GetMetainfo and opens an Exchange for d with tok, and
	// returns both answers' status codes.
	ask := func(d digest.Digest, tok string) (codes.Code, codes.Code) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if tok != "" {
			ctx = auth.WithCapability(ctx, tok)
		}
		_, err := client.GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: d.String()})
		st, err2 := client.Exchange(ctx)
		if err2 != nil {
			t.Fatal(err2)
		}
		if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{Digest: d.String(), PeerId: "intruder"}}}); err != nil {
			t.Fatal(err)
		}
		msg, err2 := st.Recv()
		if err2 == nil && msg.GetHandshake() == nil {
			t.Fatalf("Exchange answered %v before a handshake", msg)
		}
		return status.Code(err), status.Code(err2)
	}

	notHeld := digest.FromString("a blob the agent does not hold")
	expired, _ := testKey().IssueCapabilityAt(layerD, time.Now().Add(-2*time.Hour), time.Hour)
	forOther, _ := testKey().IssueCapability(notHeld, time.Hour)
	byOtherKey, _ := otherKey(t).IssueCapability(layerD, time.Hour)
	for name, tok := range map[string]string{
		"none": "", "expired": expired, "for another digest": forOther, "signed by another key": byOtherKey,
	} {
		if gm, ex := ask(layerD, tok); gm != codes.PermissionDenied || ex != codes.PermissionDenied {
			t.Errorf("capability %s: GetMetainfo %s, Exchange %s; want PERMISSION_DENIED for both", name, gm, ex)
		}
	}
	// Without a capability a blob held and one not held look the same.
	if gm, ex := ask(notHeld, ""); gm != codes.PermissionDenied || ex != codes.PermissionDenied {
		t.Errorf("no capability, blob not held: GetMetainfo %s, Exchange %s; want PERMISSION_DENIED as for a blob held", gm, ex)
	}
	if got := a.metric("shoal_agent_capability_denied_total"); got != 10 {
		t.Errorf("shoal_agent_capability_denied_total = %v, want 10", got)
	}

	good, _ := testKey().IssueCapability(layerD, time.Hour)
	if gm, ex := ask(layerD, good); gm != codes.OK || ex != codes.OK {
		t.Errorf("a valid capability: GetMetainfo %s, Exchange %s; want both served", gm, ex)
	}
	goodNotHeld, _ := testKey().IssueCapability(notHeld, time.Hour)
	if gm, ex := ask(notHeld, goodNotHeld); gm != codes.NotFound || ex != codes.NotFound {
		t.Errorf("a valid capability for a blob not held: GetMetainfo %s, Exchange %s; want NOT_FOUND", gm, ex)
	}
}

// pullFails GETs a blob through the agent and checks that the client does
// not end with the whole blob: an error status, or a body cut short.
func pullFails(t *testing.T, a *testAgent, name string, d digest.Digest, size int) (status int, got int) {
	t.Helper()
	resp, err := http.Get(a.url("/v2/" + name + "/blobs/" + d.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && rerr == nil {
		t.Fatalf("GET %s: 200 with %d bytes of %d and no error; the client must see the pull fail", d, len(body), size)
	}
	if resp.StatusCode == http.StatusOK && len(body) >= size {
		t.Fatalf("GET %s: the client got all %d bytes before the error", d, len(body))
	}
	return resp.StatusCode, len(body)
}

// TestForgedMetainfoIsRefused: metainfo that the origin did not sign
// (unsigned, or signed by another key) is never used; the pull fails
// before a byte is served.
func TestForgedMetainfoIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		signer *auth.Key
	}{
		{"unsigned", nil},
		{"signed by another key", otherKey(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startOrigin(t)
			layer := randomBytes(200_000, 22)
			layerD, _ := pushImage(t, o, "team/app", "v1", layer)
			forger := startSeeder(t, "forger", testPieceLen, false)
			forger.signer = tc.signer
			forger.add(layer)
			a := startAgent(t, testConfig(t, o.URL, []string{forger.addr}, nil))
			code, _ := pullFails(t, a, "team/app", layerD, len(layer))
			if code != http.StatusServiceUnavailable {
				t.Errorf("pull with %s metainfo: status %d, want 503", tc.name, code)
			}
			if got := a.metric("shoal_agent_metainfo_rejected_total"); got < 1 {
				t.Errorf("shoal_agent_metainfo_rejected_total = %v, want ≥ 1", got)
			}
		})
	}
}

// TestDigestMismatchBreaksTheResponse: a seeder holding the origin's key
// (or an origin with wrong metainfo) describes a blob whose every piece
// verifies but whose assembled bytes are not the digest. The client's
// stream must fail before its last byte, never end as a complete 200, and
// the blob must not stay in the cache.
func TestDigestMismatchBreaksTheResponse(t *testing.T) {
	o := startOrigin(t)
	real := randomBytes(300_000, 23)
	fake := randomBytes(len(real), 24)
	d, _ := pushImage(t, o, "team/app", "v1", real)
	// Per-piece metainfo (the old scheme, which agents still take): a
	// chained one whose chain does not end in its digest is refused as
	// invalid before any piece is fetched.
	h, err := metainfo.NewHasher(metainfo.PerPiece, testPieceLen)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = h.Write(fake)
	m, err := h.Metainfo(d) // the pieces of fake, under the digest of real
	if err != nil {
		t.Fatal(err)
	}
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.addAs(d, fake, m)
	a := startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, nil))

	code, got := pullFails(t, a, "team/app", d, len(real))
	if code != http.StatusOK {
		t.Logf("the pull failed with status %d before streaming", code)
	}
	t.Logf("the client got %d of %d bytes before the stream broke", got, len(real))
	eventually.True(t, "the download to fail", func() bool { return a.metric("shoal_agent_downloads_total", "result", "failed") >= 1 })
	if n := a.metric("shoal_agent_blob_digest_mismatches_total"); n != 1 {
		t.Errorf("shoal_agent_blob_digest_mismatches_total = %v, want 1", n)
	}
	if _, ok := (blobSource{a.swarm}).Local(d); ok {
		t.Error("the blob that does not match its digest stayed in the cache")
	}
	// Asked again, it fails again rather than being served from the cache.
	pullFails(t, a, "team/app", d, len(real))
}

// TestOriginKeysFromFiles: with swarm.originKeys the agent verifies with
// those keys only and never asks the origin for its own.
func TestOriginKeysFromFiles(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(200_000, 25)
	layerD, _ := pushImage(t, o, "team/app", "v1", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	keyFile := func(k *auth.Key) string {
		pem, err := k.Public().MarshalPEM()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "origin.pub.pem")
		if err := os.WriteFile(p, pem, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	cfg := testConfig(t, o.URL, []string{seeder.addr}, nil)
	cfg.Swarm.OriginKeys = []string{keyFile(otherKey(t)), keyFile(testKey())}
	a := startAgent(t, cfg)
	pullBlob(t, a, "team/app", layerD)

	// Only a key that is not the origin's: nothing the origin signed
	// verifies, and the agent does not fetch the right one.
	cfg = testConfig(t, o.URL, []string{seeder.addr}, nil)
	cfg.Swarm.OriginKeys = []string{keyFile(otherKey(t))}
	b := startAgent(t, cfg)
	pullFails(t, b, "team/app", layerD, len(layer))
}

// TestOriginKeysAreFetchedAgainForAnUnknownKeyID: an origin that rotates
// its key is followed without a restart.
func TestOriginKeysAreFetchedAgainForAnUnknownKeyID(t *testing.T) {
	oldKey, newKey := otherKey(t), otherKey(t)
	var current atomic.Pointer[auth.Key]
	current.Store(oldKey)
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != auth.KeysPath {
			http.NotFound(w, r)
			return
		}
		fetches.Add(1)
		b, _ := json.Marshal(auth.NewKeySet(current.Load().Public()))
		_, _ = w.Write(b)
	}))
	defer srv.Close()
	keys, err := newOriginKeys(nil, srv.URL+"/", srv.Client(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64 // nanoseconds past start
	start := time.Now()
	keys.now = func() time.Time { return start.Add(time.Duration(clock.Load())) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys.run(ctx)
	d := digest.FromString("layer")
	tok, _ := oldKey.IssueCapability(d, time.Hour)
	if err := keys.VerifyCapability(tok, d); err != nil {
		t.Fatalf("capability by the origin's key after the start-up fetch: %v", err)
	}

	current.Store(newKey)
	clock.Add(int64(keysMinInterval)) // the fetches are spaced by at least this
	tok, _ = newKey.IssueCapability(d, time.Hour)
	if err := keys.VerifyCapability(tok, d); err != nil {
		t.Fatalf("capability by the origin's new key: %v (the keys were fetched %d times)", err, fetches.Load())
	}
	// Made-up key ids do not make the agent ask the origin at every call.
	before := fetches.Load()
	for range 20 {
		forged, _ := otherKey(t).IssueCapability(d, time.Hour)
		if err := keys.VerifyCapability(forged, d); err == nil {
			t.Fatal("a capability by an unknown key was accepted")
		}
	}
	if n := fetches.Load() - before; n != 0 {
		t.Errorf("20 capabilities with unknown key ids made %d fetches of the origin's keys within %s of the last, want none", n, keysMinInterval)
	}
	clock.Add(int64(keysMinInterval))
	forged, _ := otherKey(t).IssueCapability(d, time.Hour)
	_ = keys.VerifyCapability(forged, d)
	if n := fetches.Load() - before; n != 1 {
		t.Errorf("an unknown key id %s after the last fetch made %d fetches, want 1", keysMinInterval, n)
	}
	if !strings.HasSuffix(keys.url, auth.KeysPath) || strings.Contains(keys.url, "//shoal") {
		t.Errorf("keys URL %q", keys.url)
	}
}
