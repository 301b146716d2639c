package objectstore

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/crane"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// Users of the redirect test's origin: puller may pull and push the
// repository, stranger is a known user with no rule for it.
const (
	pullerPassword   = "puller-pw-31d8"
	strangerPassword = "stranger-pw-7c02"
	redirectRepo     = "redirect/app"
)

// TestBlobGETRedirectsToTheStore runs an origin with redirect=true and auth
// on every store: an authorized blob GET is a 307 to a signed URL of the
// blob's object on the store, which a client follows (crane pulls and
// verifies the image; a plain GET reads the blob whole and, with Range,
// in part); a HEAD is answered by the origin; a client without pull
// rights gets 401 (403 for a user the rules do not name) and no URL. An
// origin on the same prefix without
// redirect serves the bytes itself.
func TestBlobGETRedirectsToTheStore(t *testing.T) {
	eachStore(t, func(t *testing.T, o *testenv.ObjectStore) {
		if o.Kind == testenv.KindGCS {
			// fake-gcs-server needs no credentials, so the driver
			// signs with a service account key file, as it would
			// on any plain-HTTP endpoint.
			t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", writeServiceAccountKey(t))
		}
		// The store under another name than the origin's 127.0.0.1,
		// as in production, where it is another host: a client then
		// does not send the origin's credentials to the store (Go's
		// client keeps them to the host name they were for). Not on
		// fake-gcs-server, which serves objects by path only on the
		// host it was started with (and ignores credentials).
		storeURL, storeHost := o.StorageURL("/shoal"), o.Addr
		if o.Kind != testenv.KindGCS {
			storeURL = strings.Replace(storeURL, "127.0.0.1", "localhost", 1)
			storeHost = strings.Replace(storeHost, "127.0.0.1", "localhost", 1)
		}
		redirecting := testenv.Origin(t, storeURL+"&redirect=true", "--auth-config", writeRedirectAuth(t))
		plain := testenv.Origin(t, storeURL)

		puller := crane.WithAuth(&authn.Basic{Username: "puller", Password: pullerPassword})
		ref := redirecting.Addr + "/" + redirectRepo + ":v1"
		pushed := pushImage(t, redirecting.Addr, redirectRepo+":v1", puller)
		checkImage(t, redirecting.Addr, redirectRepo+":v1", pushed, puller)
		layer := firstLayer(t, ref, puller)
		blobURL := fmt.Sprintf("http://%s/v2/%s/blobs/%s", redirecting.Addr, redirectRepo, layer)

		// The redirect itself.
		resp := send(t, noRedirects, http.MethodGet, blobURL, "puller", pullerPassword, nil)
		wantStatus(t, resp, http.StatusTemporaryRedirect, "GET of a layer with pull rights")
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || loc.Host != storeHost {
			t.Fatalf("GET of a layer: Location %q, want a URL on the store at %s", resp.Header.Get("Location"), storeHost)
		}
		if got := resp.Header.Get("Docker-Content-Digest"); got != layer {
			t.Errorf("the redirect's Docker-Content-Digest is %q, want %s", got, layer)
		}
		whole := send(t, noRedirects, http.MethodGet, loc.String(), "", "", nil)
		wantStatus(t, whole, http.StatusOK, "GET of the signed URL, without credentials")
		blob, _ := io.ReadAll(whole.Body)
		if got := sha256Digest(blob); got != layer {
			t.Fatalf("the signed URL served %d bytes with digest %s, want the layer %s", len(blob), got, layer)
		}

		// The store checks the signature: the URL is no open door.
		// fake-gcs-server checks none (docs/storage.md): this says so,
		// and fails the day it starts to.
		forged := send(t, noRedirects, http.MethodGet, forgeSignature(t, loc), "", "", nil)
		if o.Kind == testenv.KindGCS {
			if forged.StatusCode != http.StatusOK {
				t.Errorf("fake-gcs-server answered %s to a forged signature: it checks signatures now, so check them as on the other stores (and fix docs/storage.md)", forged.Status)
			}
		} else {
			wantStatus(t, forged, http.StatusForbidden, "GET of the signed URL with its signature changed")
		}

		// Range: the client sends it again to the store.
		resp = send(t, http.DefaultClient, http.MethodGet, blobURL, "puller", pullerPassword, map[string]string{"Range": "bytes=1000-4095"})
		wantStatus(t, resp, http.StatusPartialContent, "ranged GET of the layer, following the redirect")
		part, _ := io.ReadAll(resp.Body)
		if !bytes.Equal(part, blob[1000:4096]) {
			t.Errorf("ranged GET through the redirect: %d bytes that are not bytes 1000-4095 of the layer", len(part))
		}

		// HEAD stays at the origin.
		resp = send(t, noRedirects, http.MethodHead, blobURL, "puller", pullerPassword, nil)
		wantStatus(t, resp, http.StatusOK, "HEAD of the layer")
		if resp.Header.Get("Location") != "" || resp.Header.Get("Content-Length") != fmt.Sprint(len(blob)) {
			t.Errorf("HEAD of the layer: Location %q, Content-Length %q; want none and %d", resp.Header.Get("Location"), resp.Header.Get("Content-Length"), len(blob))
		}

		// No pull rights, no URL: anonymous is asked to log in, a
		// known user without a rule is denied.
		for _, who := range []struct {
			user, password string
			status         int
		}{{"", "", http.StatusUnauthorized}, {"stranger", strangerPassword, http.StatusForbidden}} {
			resp = send(t, noRedirects, http.MethodGet, blobURL, who.user, who.password, nil)
			what := fmt.Sprintf("GET of the layer as %q", who.user)
			wantStatus(t, resp, who.status, what)
			body, _ := io.ReadAll(resp.Body)
			if resp.Header.Get("Location") != "" || bytes.Contains(body, []byte(storeHost)) {
				t.Errorf("%s: 401 that names the store (Location %q, body %s)", what, resp.Header.Get("Location"), body)
			}
		}

		// Without redirect=true, the origin serves the bytes.
		resp = send(t, noRedirects, http.MethodGet, fmt.Sprintf("http://%s/v2/%s/blobs/%s", plain.Addr, redirectRepo, layer), "", "", nil)
		wantStatus(t, resp, http.StatusOK, "GET of the layer on the origin without redirect")
		if got, _ := io.ReadAll(resp.Body); !bytes.Equal(got, blob) {
			t.Errorf("the origin without redirect served %d bytes that differ from the layer's %d", len(got), len(blob))
		}
	})
}

// noRedirects is a client that returns a redirect instead of following it.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// send is doWith without a body, with Basic credentials (none for an
// empty user).
func send(t *testing.T, c *http.Client, method, u, user, password string, header map[string]string) *http.Response {
	t.Helper()
	h := maps.Clone(header)
	if h == nil {
		h = map[string]string{}
	}
	if user != "" {
		h["Authorization"] = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	}
	return doWith(t, c, method, u, nil, h)
}

// forgeSignature returns u with its signature (S3's X-Amz-Signature,
// Azure's sig, GCS's X-Goog-Signature) changed in one character.
func forgeSignature(t *testing.T, u *url.URL) string {
	t.Helper()
	q := u.Query()
	for _, k := range []string{"X-Amz-Signature", "sig", "X-Goog-Signature"} {
		if v := q.Get(k); v != "" {
			c := byte('A')
			if v[0] == 'A' {
				c = 'B'
			}
			q.Set(k, string(c)+v[1:])
			f := *u
			f.RawQuery = q.Encode()
			return f.String()
		}
	}
	t.Fatalf("signed URL %s has no signature parameter", u.Redacted())
	return ""
}

// firstLayer returns the digest of the first layer of the image ref.
func firstLayer(t *testing.T, ref string, opts ...crane.Option) string {
	t.Helper()
	img, err := crane.Pull(ref, append(craneOpts(t), opts...)...)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatalf("layers of %s: %d, %v", ref, len(layers), err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// writeRedirectAuth writes an auth config (and its htpasswd) that lets
// puller pull and push the test's repository and nobody else do anything.
func writeRedirectAuth(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := testenv.WriteHtpasswd(htpasswd, map[string]string{"puller": pullerPassword, "stranger": strangerPassword}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "auth.yaml")
	rules := fmt.Sprintf("htpasswd: %s\nrules:\n  - repositories: [%q]\n    subjects: [user:puller]\n    actions: [pull, push]\n", htpasswd, redirectRepo)
	if err := os.WriteFile(cfg, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// writeServiceAccountKey writes a service account key file of a fresh RSA
// key, the form GOOGLE_APPLICATION_CREDENTIALS names.
func writeServiceAccountKey(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "shoal-test",
		"private_key_id": "shoal-test-key",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "shoal-test@shoal-test.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      "https://oauth2.googleapis.com/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "service-account.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgentPullsThroughARedirectingOrigin: the P2P path never needs a
// redirect. An agent in front of an origin whose store hands out signed
// URLs asks the origin only with HEAD (never redirected) and takes the
// pieces from the origin's seeder, which reads the store through the
// driver: an image pulled through the agent is intact, a ranged GET
// through it too, and the origin redirected only the test's own GET. On
// S3 only: nothing on this path depends on the kind of store.
func TestAgentPullsThroughARedirectingOrigin(t *testing.T) {
	o := testenv.ObjectStoreServer(t, testenv.KindS3)
	storeURL := strings.Replace(o.StorageURL("/shoal"), "127.0.0.1", "localhost", 1) + "&redirect=true"
	tracker := testenv.Tracker(t)
	origin := testenv.SeedingOrigin(t, testenv.SeedingOriginOptions{Storage: storeURL, Name: "origin-1", Trackers: []string{tracker.GRPCAddr}})
	agent := testenv.Agent(t, testenv.AgentOptions{Origin: origin.URL(), Seeders: []string{origin.SeederAddr}, Trackers: []string{tracker.GRPCAddr}})

	pushed := pushImage(t, origin.Addr, redirectRepo+":p2p")
	layer := firstLayer(t, origin.Addr+"/"+redirectRepo+":p2p")
	resp := send(t, noRedirects, http.MethodGet, fmt.Sprintf("%s/v2/%s/blobs/%s", origin.URL(), redirectRepo, layer), "", "", nil)
	wantStatus(t, resp, http.StatusTemporaryRedirect, "GET of a layer on the origin")

	checkImage(t, agent.Addr, redirectRepo+":p2p", pushed)
	whole := send(t, noRedirects, http.MethodGet, fmt.Sprintf("%s/v2/%s/blobs/%s", agent.URL(), redirectRepo, layer), "", "", nil)
	wantStatus(t, whole, http.StatusOK, "GET of the layer through the agent")
	blob, _ := io.ReadAll(whole.Body)
	if got := sha256Digest(blob); got != layer {
		t.Fatalf("the agent served %d bytes with digest %s, want the layer %s", len(blob), got, layer)
	}
	resp = send(t, noRedirects, http.MethodGet, fmt.Sprintf("%s/v2/%s/blobs/%s", agent.URL(), redirectRepo, layer), "", "", map[string]string{"Range": "bytes=1000-4095"})
	wantStatus(t, resp, http.StatusPartialContent, "ranged GET of the layer through the agent")
	if part, _ := io.ReadAll(resp.Body); !bytes.Equal(part, blob[1000:4096]) {
		t.Errorf("ranged GET through the agent: %d bytes that are not bytes 1000-4095 of the layer", len(part))
	}

	om, err := testenv.ScrapeMetrics(t.Context(), origin.URL()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if n := om.Sum("shoal_origin_http_requests_total", "handler", "blob", "code", "307"); n != 1 {
		t.Errorf("the origin answered %.0f blob requests with a redirect, want 1 (the test's own GET): the agent's went there too", n)
	}
	am, err := testenv.ScrapeMetrics(t.Context(), agent.URL()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if n := am.Sum("shoal_agent_downloaded_bytes_total", "source", "origin"); n == 0 {
		t.Error("the agent downloaded nothing from the origin's seeder: the layers did not come over the P2P path")
	}
}
