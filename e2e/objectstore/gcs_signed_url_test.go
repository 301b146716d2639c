package objectstore

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/storage/drivers"
)

// The signed URLs' validity (pkg/storage/gcs RedirectURL, registry:2's
// 20 minutes) and the service account writeServiceAccountKey names.
const (
	gcsRedirectExpiry = 20 * time.Minute
	gcsTestAccount    = "shoal-test@shoal-test.iam.gserviceaccount.com"
)

// fake-gcs-server checks no signature, so these tests check the GCS
// signed URLs as Google's servers do, with a verifier written from
// Google's description of the V4 signing process (GOOG4-RSA-SHA256: the
// canonical request, the string to sign, an RSA PKCS #1 v1.5 signature
// over its SHA-256, hex in X-Goog-Signature), not with the SDK that made
// them. docs/storage.md says what this proves and what it cannot.

// TestGCSSignedURLOnGoogleIsAValidV4Signature opens the GCS driver as in
// production (no endpoint: Google's storage.googleapis.com over HTTPS,
// credentials from the service account key GOOGLE_APPLICATION_CREDENTIALS
// names, which the SDK signs with) and checks the URL it hands out for a
// blob exactly as Google would receive it. Nothing is sent anywhere: the
// driver does not contact the store to sign.
func TestGCSSignedURLOnGoogleIsAValidV4Signature(t *testing.T) {
	keyFile := writeServiceAccountKey(t)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", keyFile)
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	pub := serviceAccountPublicKey(t, keyFile)

	d, err := drivers.Open(t.Context(), "gs://shoal-images/registry?redirect=true")
	if err != nil {
		t.Fatalf("opening the GCS driver on Google's endpoint: %v", err)
	}
	const blob = "/docker/registry/v2/blobs/sha256/4f/4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945/data"
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://origin.example/v2/app/blobs/sha256:4f53", nil)
	before := time.Now()
	raw, err := d.RedirectURL(req, blob)
	after := time.Now()
	if err != nil || raw == "" {
		t.Fatalf("RedirectURL of a blob: %q, %v; want a signed URL", raw, err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "https" || u.Host != "storage.googleapis.com" || u.Path != "/shoal-images/registry"+blob {
		t.Fatalf("signed URL %s, want https://storage.googleapis.com/shoal-images/registry%s?...", u.Redacted(), blob)
	}
	// A client sends the URL's host as Host (443 is the default port).
	checkGCSSignedURL(t, u, u.Host, pub, before, after)
}

// TestGCSSignedURLFromTheOriginIsAValidV4Signature takes the URL an origin
// with redirect=true on fake-gcs-server answers a blob GET with (signed
// with the key file, as on any plain-HTTP endpoint) and checks it as
// Google would.
func TestGCSSignedURLFromTheOriginIsAValidV4Signature(t *testing.T) {
	o := testenv.ObjectStoreServer(t, testenv.KindGCS)
	keyFile := writeServiceAccountKey(t)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", keyFile)
	pub := serviceAccountPublicKey(t, keyFile)
	origin := testenv.Origin(t, o.StorageURL("/shoal")+"&redirect=true")

	const repo = "redirect/gcs-signed"
	pushImage(t, origin.Addr, repo+":v1")
	layer := firstLayer(t, origin.Addr+"/"+repo+":v1")
	before := time.Now()
	resp := send(t, noRedirects, http.MethodGet, fmt.Sprintf("http://%s/v2/%s/blobs/%s", origin.Addr, repo, layer), "", "", nil)
	after := time.Now()
	wantStatus(t, resp, http.StatusTemporaryRedirect, "GET of a layer on the redirecting origin")
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	sum := strings.TrimPrefix(layer, "sha256:")
	wantPath := fmt.Sprintf("/%s/shoal/docker/registry/v2/blobs/sha256/%s/%s/data", o.Bucket, sum[:2], sum)
	if u.Scheme != "http" || u.Host != o.Addr || u.Path != wantPath {
		t.Fatalf("Location %s, want http://%s%s?...", u.Redacted(), o.Addr, wantPath)
	}
	// The SDK signs the host name without the port ("host:"+Hostname()
	// in its signedURLV4), which on Google's endpoint, always on the
	// scheme's default port, is the Host header a client sends. The
	// emulator listens on another port, so the host is taken the same way
	// here; the test above checks the Host as sent.
	checkGCSSignedURL(t, u, u.Hostname(), pub, before, after)
}

// checkGCSSignedURL checks that u is a V4 signed URL of a GET, signed by
// the test's service account at a time between before and after, valid
// for gcsRedirectExpiry, whose signature verifies with pub for the host
// value host; and that the same URL with another object or another expiry
// does not verify (so that the check can fail).
func checkGCSSignedURL(t *testing.T, u *url.URL, host string, pub *rsa.PublicKey, before, after time.Time) {
	t.Helper()
	v, err := verifyGOOG4(http.MethodGet, u, host, pub)
	if err != nil {
		t.Fatalf("the signed URL %s does not verify as a V4 signature: %v", u.Redacted(), err)
	}
	if v.account != gcsTestAccount {
		t.Errorf("X-Goog-Credential names %q, want the service account %s", v.account, gcsTestAccount)
	}
	if lo, hi := before.UTC().Truncate(time.Second), after.UTC(); v.date.Before(lo) || v.date.After(hi) {
		t.Errorf("X-Goog-Date %s, want the time it was signed (between %s and %s)", v.date.Format(time.RFC3339), lo.Format(time.RFC3339), hi.Format(time.RFC3339))
	}
	// The SDK writes the expiry in whole seconds from its own clock
	// reading, a little after the driver's: int() of 19:59.99... drops
	// the last second. What counts is the instant the URL stops working.
	if want := int(gcsRedirectExpiry.Seconds()); v.expires != want && v.expires != want-1 {
		t.Errorf("X-Goog-Expires=%d, want %d (the configured %s) or one less (the SDK truncates to whole seconds)", v.expires, want, gcsRedirectExpiry)
	}

	// Tampered URLs must not verify: a signature is bound to the object
	// and to the expiry.
	otherObject := *u
	otherObject.Path = strings.TrimSuffix(u.Path, "/data") + "x/data"
	otherObject.RawPath = ""
	longer := *u
	q := u.Query()
	q.Set("X-Goog-Expires", "604800")
	longer.RawQuery = q.Encode()
	otherHost := host + ".example"
	for _, c := range []struct {
		what string
		u    *url.URL
		host string
	}{
		{"another object's path", &otherObject, host},
		{"an expiry of 7 days", &longer, host},
		{"another host", u, otherHost},
	} {
		if _, err := verifyGOOG4(http.MethodGet, c.u, c.host, pub); !errors.Is(err, rsa.ErrVerification) {
			t.Errorf("the signed URL with %s: verification gave %v, want %v", c.what, err, rsa.ErrVerification)
		}
	}
	if _, err := verifyGOOG4(http.MethodHead, u, host, pub); !errors.Is(err, rsa.ErrVerification) {
		t.Errorf("the signed URL used for a HEAD: verification gave %v, want %v (it is signed for GET)", err, rsa.ErrVerification)
	}
}

// goog4 is what a verified V4 signed URL says.
type goog4 struct {
	account string    // the service account of X-Goog-Credential
	date    time.Time // X-Goog-Date
	expires int       // X-Goog-Expires, seconds
}

// verifyGOOG4 verifies the V4 signature (GOOG4-RSA-SHA256) of the signed
// URL u for a request with method and Host header host, with the service
// account's public key, as Cloud Storage does
// (cloud.google.com/storage/docs/authentication/canonical-requests and
// .../signatures): it rebuilds the canonical request
//
//	METHOD
//	/percent-encoded/path
//	canonical query string (every parameter but X-Goog-Signature)
//	canonical headers (host:...), each ending in a newline
//	(empty line)
//	signed headers (host)
//	UNSIGNED-PAYLOAD
//
// and the string to sign
//
//	GOOG4-RSA-SHA256
//	X-Goog-Date
//	credential scope (YYYYMMDD/auto/storage/goog4_request)
//	hex SHA-256 of the canonical request
//
// and checks X-Goog-Signature, hex, as an RSASSA-PKCS1-v1_5 SHA-256
// signature of the string to sign. A signature that does not match is
// rsa.ErrVerification; a malformed URL is another error.
func verifyGOOG4(method string, u *url.URL, host string, pub *rsa.PublicKey) (goog4, error) {
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return goog4{}, fmt.Errorf("query string: %w", err)
	}
	one := func(k string) (string, error) {
		if len(q[k]) != 1 || q[k][0] == "" {
			return "", fmt.Errorf("want one %s, have %q", k, q[k])
		}
		return q[k][0], nil
	}
	var p [6]string
	for i, k := range []string{"X-Goog-Algorithm", "X-Goog-Credential", "X-Goog-Date", "X-Goog-Expires", "X-Goog-SignedHeaders", "X-Goog-Signature"} {
		if p[i], err = one(k); err != nil {
			return goog4{}, err
		}
	}
	algorithm, credential, date, expires, signedHeaders, signature := p[0], p[1], p[2], p[3], p[4], p[5]
	if algorithm != "GOOG4-RSA-SHA256" {
		return goog4{}, fmt.Errorf("X-Goog-Algorithm=%s, want GOOG4-RSA-SHA256", algorithm)
	}
	var v goog4
	if v.date, err = time.Parse("20060102T150405Z", date); err != nil {
		return goog4{}, fmt.Errorf("X-Goog-Date: %w", err)
	}
	if v.expires, err = strconv.Atoi(expires); err != nil || v.expires < 1 || v.expires > 604800 {
		return goog4{}, fmt.Errorf("X-Goog-Expires=%s, want 1 to 604800 seconds", expires)
	}
	account, scope, ok := strings.Cut(credential, "/")
	if !ok || account == "" {
		return goog4{}, fmt.Errorf("X-Goog-Credential=%s, want <service account>/<scope>", credential)
	}
	if want := date[:8] + "/auto/storage/goog4_request"; scope != want {
		return goog4{}, fmt.Errorf("credential scope %s, want %s", scope, want)
	}
	v.account = account
	// Only the Host header can be signed for a URL a client is
	// redirected to: it sends no other header the signer could know.
	if signedHeaders != "host" {
		return goog4{}, fmt.Errorf("X-Goog-SignedHeaders=%s, want host", signedHeaders)
	}
	sig, err := hex.DecodeString(signature)
	if err != nil {
		return goog4{}, fmt.Errorf("X-Goog-Signature is not hex: %w", err)
	}

	names := slices.Sorted(func(yield func(string) bool) {
		for k := range q {
			if k != "X-Goog-Signature" && !yield(k) {
				return
			}
		}
	})
	var query []string
	for _, k := range names {
		values := slices.Clone(q[k])
		slices.Sort(values)
		for _, val := range values {
			query = append(query, gcsPercentEncode(k, false)+"="+gcsPercentEncode(val, false))
		}
	}
	canonical := strings.Join([]string{
		method,
		gcsPercentEncode(u.Path, true),
		strings.Join(query, "&"),
		"host:" + strings.ToLower(host) + "\n",
		signedHeaders,
		"UNSIGNED-PAYLOAD",
	}, "\n")
	hashed := sha256.Sum256([]byte(canonical))
	stringToSign := strings.Join([]string{algorithm, date, scope, hex.EncodeToString(hashed[:])}, "\n")
	digest := sha256.Sum256([]byte(stringToSign))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		return goog4{}, fmt.Errorf("RSA-SHA256 signature over the string to sign %q: %w", stringToSign, err)
	}
	return v, nil
}

// gcsPercentEncode percent-encodes s as V4 signing does: every byte but
// A-Z, a-z, 0-9, '-', '.', '_' and '~' (and '/' in a path) as %XX,
// upper-case hex.
func gcsPercentEncode(s string, path bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~', path && c == '/':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// serviceAccountPublicKey returns the public key of the service account
// key file that writeServiceAccountKey wrote.
func serviceAccountPublicKey(t *testing.T, file string) *rsa.PublicKey {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var sa struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(b, &sa); err != nil {
		t.Fatalf("reading the service account key %s: %v", file, err)
	}
	block, _ := pem.Decode([]byte(sa.PrivateKey))
	if block == nil {
		t.Fatalf("the service account key %s has no PEM private key", file)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("parsing the service account key %s: %v", file, err)
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		t.Fatalf("the service account key %s is a %T, want RSA", file, key)
	}
	return &rk.PublicKey
}
