package seeder

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// badCapabilities are the capabilities an agent without the right to d
// could present, by name.
func badCapabilities(t *testing.T, d digest.Digest) map[string]string {
	t.Helper()
	other, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	forOther, _ := clusterKey().IssueCapability(digest.FromString("a blob this agent may read"), time.Hour)
	byOtherKey, _ := other.IssueCapability(d, time.Hour)
	expired, _ := clusterKey().IssueCapabilityAt(d, time.Now().Add(-2*time.Hour), time.Hour)
	return map[string]string{
		"none":                   "",
		"for another digest":     forOther,
		"expired":                expired,
		"signed by another key":  byOtherKey,
		"a registry token value": "Bearer abc",
	}
}

func TestSeederServesOnlyAgainstACapability(t *testing.T) {
	drv := newCountingDriver()
	blob, _ := randomBlob(t, 3<<20)
	dg := putBlob(t, drv, blob)
	s := startSeeder(t, drv, nil)

	for name, tok := range badCapabilities(t, dg) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tok != "" {
				ctx = auth.WithCapability(ctx, tok)
			}
			_, err := s.rawClient().GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: dg.String()})
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "capability") {
				t.Errorf("GetMetainfo with capability %s = %v, want PERMISSION_DENIED naming the capability", name, err)
			}

			st, err := s.rawClient().Exchange(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{Digest: dg.String(), PeerId: "intruder"}}}); err != nil {
				t.Fatal(err)
			}
			msg, err := st.Recv()
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("Exchange with capability %s: got %v, %v; want PERMISSION_DENIED and no handshake", name, msg, err)
			}
		})
	}
	// Refused before anything was read: an anonymous caller cannot make an
	// owner read a blob from storage, nor learn that it exists. The reads
	// of a cache fill come in the background, maybe after these calls
	// returned; the fill's cache entry is made while the call is answered,
	// so no entry now means none was started.
	if s.cache.has(dg) {
		t.Errorf("refused calls started reading the blob into the cache")
	}
	if n := drv.readsOf(dg); n != 0 {
		t.Errorf("refused calls read the blob from storage %d times, want 0", n)
	}
	drv.mu.Lock()
	reads := len(drv.reads)
	drv.mu.Unlock()
	if reads != 0 {
		t.Errorf("refused calls read %d paths from storage, want none", reads)
	}
	if n := counter(t, s.m.capabilityDenied.WithLabelValues("get_metainfo")) + counter(t, s.m.capabilityDenied.WithLabelValues("exchange")); n != 10 {
		t.Errorf("shoal_origin_seeder_capability_denied_total = %.0f, want 10", n)
	}

	// With a capability for the blob, the metainfo comes signed by the
	// cluster key and the pieces follow.
	m := getMetainfo(t, s.client(), dg)
	if err := auth.NewVerifier(clusterKey().Public()).VerifyMetainfo(m); err != nil {
		t.Fatalf("metainfo from the seeder: %v", err)
	}
	if got := fetchAll(t, s.client(), m); string(got) != string(blob) {
		t.Error("the blob fetched with a capability differs from the one stored")
	}
}

func TestSeederNeedsAKey(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.CacheDir = t.TempDir()
	if _, err := New(cfg, inmemory.New(), Options{}); err == nil || !strings.Contains(err.Error(), "key") {
		t.Fatalf("New without a signing key = %v, want an error naming the key", err)
	}
}
