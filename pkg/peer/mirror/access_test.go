package mirror

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// The origin's access rules, as the tests below set them: private/app is
// readable by alice only, public/app by anyone. Each repository holds its
// own blob and manifest; neither holds the other's.
const (
	alice          = "Basic YWxpY2U6c2VjcmV0" // alice:secret
	bob            = "Basic Ym9iOmh1bnRlcjI=" // bob:hunter2
	anonymous      = ""
	testChallenge  = `Bearer realm="https://origin.example.com/auth/token",service="shoal",scope="repository:private/app:pull"`
	privateRepo    = "private/app"
	publicRepo     = "public/app"
	aclManifestFmt = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"repo":%q}}`
)

// localChallenge is testChallenge as the mirror at srv relays it: the
// realm its own token endpoint, the rest the origin's.
func localChallenge(srv *httptest.Server) string {
	return strings.Replace(testChallenge, "https://origin.example.com/auth/token", srv.URL+"/auth/token", 1)
}

var (
	privateBlob     = []byte("private layer")
	privateBlobD    = digest.FromBytes(privateBlob)
	publicBlob      = []byte("public layer")
	publicBlobD     = digest.FromBytes(publicBlob)
	privateManifest = []byte(strings.Replace(aclManifestFmt, "%q", strconv.Quote(privateRepo), 1))
	privateManD     = digest.FromBytes(privateManifest)
	publicManifest  = []byte(strings.Replace(aclManifestFmt, "%q", strconv.Quote(publicRepo), 1))
	publicManD      = digest.FromBytes(publicManifest)
)

// aclOrigin is an origin with per-repository access rules: anonymous
// requests for private/app get 401 and the challenge, bob gets 403; down
// makes it answer 503 to everything.
type aclOrigin struct {
	*httptest.Server
	down     atomic.Bool
	requests atomic.Int64
}

func newACLOrigin(t *testing.T) *aclOrigin {
	t.Helper()
	type content struct {
		blobs     map[digest.Digest][]byte
		manifests map[string][]byte // by tag and by digest
	}
	repos := map[string]content{
		privateRepo: {
			blobs:     map[digest.Digest][]byte{privateBlobD: privateBlob},
			manifests: map[string][]byte{"latest": privateManifest, privateManD.String(): privateManifest},
		},
		publicRepo: {
			blobs:     map[digest.Digest][]byte{publicBlobD: publicBlob},
			manifests: map[string][]byte{"latest": publicManifest, publicManD.String(): publicManifest},
		},
	}
	o := &aclOrigin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.requests.Add(1)
		if o.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		rt, err := parseRoute(r.URL.EscapedPath())
		if err != nil {
			originError(w, http.StatusBadRequest, err.Code)
			return
		}
		if rt.kind == "ping" {
			io.WriteString(w, "{}")
			return
		}
		repo, ok := repos[rt.name]
		if !ok {
			originError(w, http.StatusNotFound, "NAME_UNKNOWN")
			return
		}
		if rt.name == privateRepo {
			switch r.Header.Get("Authorization") {
			case alice:
			case anonymous:
				w.Header().Set("WWW-Authenticate", testChallenge)
				originError(w, http.StatusUnauthorized, "UNAUTHORIZED")
				return
			default:
				originError(w, http.StatusForbidden, "DENIED")
				return
			}
		}
		switch rt.kind {
		case "blob":
			b, ok := repo.blobs[digest.Digest(rt.ref)]
			if !ok {
				originError(w, http.StatusNotFound, "BLOB_UNKNOWN")
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			if r.Method == http.MethodGet {
				w.Write(b)
			}
		case "manifest":
			m, ok := repo.manifests[rt.ref]
			if !ok {
				originError(w, http.StatusNotFound, "MANIFEST_UNKNOWN")
				return
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(m).String())
			w.Write(m)
		default:
			originError(w, http.StatusNotFound, "UNSUPPORTED")
		}
	}))
	t.Cleanup(o.Close)
	return o
}

func originError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(ociapi.ErrorBody{Errors: []ociapi.ErrorEntry{{Code: code, Message: "from the test origin"}}})
}

// aclBlobs is the piece store of a host where alice pulled private/app and
// someone pulled public/app: both blobs are complete locally.
func aclBlobs() *fakeBlobs {
	return &fakeBlobs{local: map[digest.Digest][]byte{privateBlobD: privateBlob, publicBlobD: publicBlob}}
}

// checkStatus asserts a's status and, for a GET with an error status, the
// OCI error code in its body.
func checkStatus(t *testing.T, what string, a answer, status int, code string) {
	t.Helper()
	if a.status != status {
		t.Errorf("%s: status %d, want %d (body %s)", what, a.status, status, a.body)
		return
	}
	if code == "" {
		return
	}
	var body ociapi.ErrorBody
	if err := json.Unmarshal(a.body, &body); err != nil || len(body.Errors) == 0 {
		t.Errorf("%s: not an OCI error body: %q", what, a.body)
		return
	}
	if body.Errors[0].Code != code {
		t.Errorf("%s: code %s, want %s (message %q)", what, body.Errors[0].Code, code, body.Errors[0].Message)
	}
}

// TestPrivateBlobNotServedToOthers: alice pulled a private blob through
// this host's agent; anonymous and bob asking for it are refused, with
// the origin's answer while it is up and with an error naming the origin
// while it is down, although the bytes are on this host.
func TestPrivateBlobNotServedToOthers(t *testing.T) {
	o := newACLOrigin(t)
	clock := newFakeClock()
	srv := newTestMirrorWith(t, testConfig(o.URL), Options{Blobs: aclBlobs(), Now: clock.Now})
	blobPath := "/v2/" + privateRepo + "/blobs/" + privateBlobD.String()
	manPath := "/v2/" + privateRepo + "/manifests/" + privateManD.String()
	for _, p := range []string{manPath, blobPath} {
		if a := get(t, srv, http.MethodGet, p, alice); a.status != http.StatusOK {
			t.Fatalf("alice GET %s: %d %s", p, a.status, a.body)
		}
	}

	for _, p := range []string{manPath, blobPath} {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			a := get(t, srv, m, p, anonymous)
			checkStatus(t, "anonymous "+m+" "+p+" with the origin up", a, http.StatusUnauthorized, "")
			if got, want := a.header.Get("WWW-Authenticate"), localChallenge(srv); got != want {
				t.Errorf("anonymous %s %s: challenge %q, want the origin's with the agent's realm, %q", m, p, got, want)
			}
			if m == http.MethodGet && bytes.Contains(a.body, privateBlob) {
				t.Errorf("anonymous GET %s: the private bytes were sent", p)
			}
			checkStatus(t, "bob "+m+" "+p+" with the origin up", get(t, srv, m, p, bob), http.StatusForbidden, "")
		}
	}

	o.down.Store(true)
	clock.Advance(DefaultConfig().AuthTTL + 1) // alice's yes is no longer reused: the origin must be asked
	for _, p := range []string{manPath, blobPath} {
		for _, who := range []string{anonymous, bob} {
			a := get(t, srv, http.MethodGet, p, who)
			checkOriginError(t, http.MethodGet, p, a, http.StatusServiceUnavailable, o.URL, "503")
			if bytes.Contains(a.body, privateBlob) || bytes.Contains(a.body, privateManifest) {
				t.Errorf("GET %s by %q with the origin down: the private content was sent", p, who)
			}
			a = get(t, srv, http.MethodHead, p, who)
			checkStatus(t, "HEAD "+p+" with the origin down", a, http.StatusServiceUnavailable, "")
		}
	}
	// alice, whom the origin let read it, still is served.
	for _, c := range []struct {
		path string
		want []byte
	}{{manPath, privateManifest}, {blobPath, privateBlob}} {
		if a := get(t, srv, http.MethodGet, c.path, alice); a.status != http.StatusOK || !bytes.Equal(a.body, c.want) {
			t.Errorf("alice GET %s with the origin down: %d %q, want 200 %q", c.path, a.status, a.body, c.want)
		}
	}
}

// TestCachedBlobNotServedUnderAnotherRepository: a blob (or manifest)
// held for private/app is asked for under public/app, which anyone may
// read but which never held it. Up, the origin says it is unknown there;
// down, the mirror refuses rather than serve it from the shared cache.
func TestCachedBlobNotServedUnderAnotherRepository(t *testing.T) {
	o := newACLOrigin(t)
	clock := newFakeClock()
	srv := newTestMirrorWith(t, testConfig(o.URL), Options{Blobs: aclBlobs(), Now: clock.Now})
	for _, c := range []struct{ path, who string }{
		{"/v2/" + privateRepo + "/manifests/" + privateManD.String(), alice},
		{"/v2/" + privateRepo + "/blobs/" + privateBlobD.String(), alice},
		{"/v2/" + publicRepo + "/manifests/latest", anonymous},
		{"/v2/" + publicRepo + "/manifests/" + publicManD.String(), anonymous},
		{"/v2/" + publicRepo + "/blobs/" + publicBlobD.String(), anonymous},
		{"/v2/" + publicRepo + "/blobs/" + publicBlobD.String(), alice},
	} {
		if a := get(t, srv, http.MethodGet, c.path, c.who); a.status != http.StatusOK {
			t.Fatalf("GET %s by %q with the origin up: %d %s", c.path, c.who, a.status, a.body)
		}
	}
	smuggled := []struct{ path, notFound string }{
		{"/v2/" + publicRepo + "/blobs/" + privateBlobD.String(), "BLOB_UNKNOWN"},
		{"/v2/" + publicRepo + "/manifests/" + privateManD.String(), "MANIFEST_UNKNOWN"},
	}
	for _, c := range smuggled {
		for _, who := range []string{anonymous, alice} {
			a := get(t, srv, http.MethodGet, c.path, who)
			checkStatus(t, "GET "+c.path+" by "+strconv.Quote(who)+" with the origin up", a, http.StatusNotFound, c.notFound)
		}
	}

	o.down.Store(true)
	clock.Advance(DefaultConfig().AuthTTL + 1)
	for _, c := range smuggled {
		for _, who := range []string{anonymous, alice} {
			a := get(t, srv, http.MethodGet, c.path, who)
			checkOriginError(t, http.MethodGet, c.path, a, http.StatusServiceUnavailable, o.URL)
			if bytes.Contains(a.body, privateBlob) || bytes.Contains(a.body, privateManifest) {
				t.Errorf("GET %s by %q with the origin down: the private content was sent", c.path, who)
			}
		}
	}
	// What public/app holds is still served to anyone, down or not.
	for _, c := range []struct {
		path string
		want []byte
	}{
		{"/v2/" + publicRepo + "/blobs/" + publicBlobD.String(), publicBlob},
		{"/v2/" + publicRepo + "/manifests/" + publicManD.String(), publicManifest},
	} {
		if a := get(t, srv, http.MethodGet, c.path, anonymous); a.status != http.StatusOK || !bytes.Equal(a.body, c.want) {
			t.Errorf("anonymous GET %s with the origin down: %d %q, want 200 %q", c.path, a.status, a.body, c.want)
		}
	}
}
