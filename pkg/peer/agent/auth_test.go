package agent

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// TestCredentialsArePassedToTheOrigin: the origin decides who reads what;
// the agent passes credentials through and checks them for every blob,
// cached or not.
func TestCredentialsArePassedToTheOrigin(t *testing.T) {
	s, err := origin.New(inmemory.New(), origin.DefaultConfig(), testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetSigningKey(testKey(), 0)
	const challenge = `Basic realm="shoal"`
	// private/... needs the credentials alice:secret; everything else is
	// public.
	guarded := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/private/") {
			if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "secret" {
				w.Header().Set("WWW-Authenticate", challenge)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(guarded.Close)
	o := &testOrigin{t: t, srv: guarded, URL: guarded.URL}
	layer := randomBytes(300_000, 10)
	layerD, md := pushImageWithAuth(t, o, layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	a := startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, nil))
	creds := "Basic " + basic("alice", "secret")

	for _, path := range []string{"/v2/private/app/manifests/v1", "/v2/private/app/manifests/" + md.String(), "/v2/private/app/blobs/" + layerD.String()} {
		resp, body := a.get("GET", path)
		expectStatus(t, "anonymous GET "+path, resp, body, http.StatusUnauthorized)
		if resp.Header.Get("WWW-Authenticate") != challenge {
			t.Errorf("anonymous GET %s: WWW-Authenticate %q, want the origin's %q", path, resp.Header.Get("WWW-Authenticate"), challenge)
		}
		resp, body = a.get("GET", path, "Authorization", creds)
		expectStatus(t, "GET with credentials "+path, resp, body, http.StatusOK)
	}
	// The blob is cached now; without credentials it is still refused.
	resp, body := a.get("GET", "/v2/private/app/blobs/"+layerD.String())
	expectStatus(t, "anonymous GET of a cached blob", resp, body, http.StatusUnauthorized)
	resp, body = a.get("GET", "/v2/private/app/blobs/"+layerD.String(), "Authorization", "Basic "+basic("alice", "wrong"))
	expectStatus(t, "GET of a cached blob with wrong credentials", resp, body, http.StatusUnauthorized)
	resp, body = a.get("GET", "/v2/private/app/blobs/"+layerD.String(), "Authorization", creds)
	expectStatus(t, "GET of a cached blob with credentials", resp, body, http.StatusOK)
	if digest.FromBytes(body) != layerD {
		t.Fatal("wrong blob content")
	}
}

func basic(user, pass string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pass)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

func pushImageWithAuth(t *testing.T, o *testOrigin, layer []byte) (digest.Digest, digest.Digest) {
	t.Helper()
	auth := "Basic " + basic("alice", "secret")
	cfgBlob := []byte(`{"architecture":"amd64","os":"linux"}`)
	push := func(content []byte) digest.Digest {
		d := digest.FromBytes(content)
		resp, b := o.do("POST", "/v2/private/app/blobs/uploads/?digest="+d.String(), content, "Authorization", auth)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("pushing blob: %d %s", resp.StatusCode, b)
		}
		return d
	}
	cfgD, layerD := push(cfgBlob), push(layer)
	manifest := []byte(`{"schemaVersion":2,"mediaType":"` + ociManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		cfgD.String() + `","size":` + itoa(len(cfgBlob)) + `},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` +
		layerD.String() + `","size":` + itoa(len(layer)) + `}]}`)
	resp, b := o.do("PUT", "/v2/private/app/manifests/v1", manifest, "Content-Type", ociManifest, "Authorization", auth)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("pushing manifest: %d %s", resp.StatusCode, b)
	}
	return layerD, digest.FromBytes(manifest)
}

func itoa(n int) string { return strconv.Itoa(n) }
