package origin

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// newSigningOrigin serves an origin that hands out capabilities signed by
// k (none when k is nil).
func newSigningOrigin(t *testing.T, k *auth.Key) exchange {
	t.Helper()
	s, err := New(inmemory.New(), DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if k != nil {
		s.SetSigningKey(k, 0)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return exchange{t: t, base: ts.URL}
}

func TestBlobAnswersCarryACapabilityForTheBlob(t *testing.T) {
	k, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e := newSigningOrigin(t, k)
	d := e.pushBlob("team/app", []byte("layer bytes"))
	v := auth.NewVerifier(k.Public())
	for _, tc := range []struct {
		method string
		hdr    []string
		status int
	}{
		{http.MethodHead, nil, http.StatusOK},
		{http.MethodGet, nil, http.StatusOK},
		{http.MethodGet, []string{"Range", "bytes=2-4"}, http.StatusPartialContent},
	} {
		resp := e.do(tc.method, "/v2/team/app/blobs/"+d.String(), nil, tc.hdr...)
		e.expect(resp, tc.status)
		tok := resp.Header.Get(auth.CapabilityHeader)
		if err := v.VerifyCapability(tok, d); err != nil {
			t.Errorf("%s %v: the %s header does not hold a capability for %s: %v", tc.method, tc.hdr, auth.CapabilityHeader, d, err)
		}
		if err := v.VerifyCapability(tok, digest.FromString("other")); err == nil {
			t.Errorf("%s: the capability is accepted for another blob too", tc.method)
		}
	}
	// The default TTL: valid just before 30m, not long after.
	tok := e.do(http.MethodHead, "/v2/team/app/blobs/"+d.String(), nil).Header.Get(auth.CapabilityHeader)
	v.SetClock(func() time.Time { return time.Now().Add(DefaultCapabilityTTL - time.Minute) })
	if err := v.VerifyCapability(tok, d); err != nil {
		t.Errorf("capability refused %s before its default TTL ends: %v", time.Minute, err)
	}
	v.SetClock(func() time.Time { return time.Now().Add(DefaultCapabilityTTL + 5*time.Minute) })
	if err := v.VerifyCapability(tok, d); err == nil {
		t.Errorf("capability still accepted 5m after its default TTL of %s", DefaultCapabilityTTL)
	}

	for _, path := range []string{
		"/v2/team/app/blobs/" + digest.FromString("never pushed").String(), // unknown blob
		"/v2/other/repo/blobs/" + d.String(),                               // not linked in that repository
	} {
		resp := e.do(http.MethodHead, path, nil)
		e.expect(resp, http.StatusNotFound)
		if got := resp.Header.Get(auth.CapabilityHeader); got != "" {
			t.Errorf("HEAD %s answered 404 with a capability", path)
		}
	}
}

func TestOriginPublishesItsPublicKey(t *testing.T) {
	k, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e := newSigningOrigin(t, k)
	body := e.expect(e.do(http.MethodGet, auth.KeysPath, nil), http.StatusOK)
	keys, err := auth.ParseKeySet(body)
	if err != nil {
		t.Fatalf("GET %s: %v (body %s)", auth.KeysPath, err, body)
	}
	if len(keys) != 1 || keys[0].ID != k.ID() || !keys[0].Key.Equal(k.Public().Key) {
		t.Fatalf("GET %s = %v, want the signing key %s", auth.KeysPath, keys, k.ID())
	}
}

func TestWithoutASigningKeyNoCapabilityIsHandedOut(t *testing.T) {
	e := newSigningOrigin(t, nil)
	d := e.pushBlob("team/app", []byte("layer bytes"))
	resp := e.do(http.MethodHead, "/v2/team/app/blobs/"+d.String(), nil)
	e.expect(resp, http.StatusOK)
	if got := resp.Header.Get(auth.CapabilityHeader); got != "" {
		t.Errorf("an origin without a signing key handed out a capability %q", got)
	}
	e.expect(e.do(http.MethodGet, auth.KeysPath, nil), http.StatusNotFound)
}
