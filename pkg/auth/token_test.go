package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/opencontainers/go-digest"
)

// bearer authenticates a request carrying token.
func bearer(a *Authorizer, token string) (Subject, error) {
	r := httptest.NewRequest("GET", "/v2/path2/app/manifests/latest", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	return a.Authenticate(r)
}

// sign signs claims with method and key, naming kid, for forging tokens.
func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("signing a test token: %v", err)
	}
	return s
}

// claimsAt are the claims of a token the origin would issue at now.
func claimsAt(now time.Time, iss string, access ...Access) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": iss, "sub": "alice", "aud": "shoal",
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Unix(), "iat": now.Unix(),
		"jti": "test", "access": access,
	}
}

func pullPath2() Access {
	return Access{Type: "repository", Name: "path2/app", Actions: []string{"pull"}}
}

func TestIssuedTokenIsAcceptedAndBoundsDecisions(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthorizer(t, policyConfig(), clock)
	raw, _, err := a.tokens.issue("bob", []Access{pullPath2()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := bearer(a, raw)
	if err != nil {
		t.Fatalf("the origin's own token: %v", err)
	}
	if s.User != "bob" || s.Token == nil || s.Token.Subject != "bob" || s.Token.Issuer != "shoal" || s.Token.Audience != "shoal" {
		t.Fatalf("subject %+v token %+v, want bob's token from shoal for shoal", s, s.Token)
	}
	for _, c := range []struct {
		repo   string
		action Action
		allow  bool
		why    string
	}{
		{"path2/app", Pull, true, "granted by the token and the rules"},
		{"path2/other", Pull, false, "another repository than the token's"},
		{"path2/app", Push, false, "another action than the token's"},
		{"path1/app", Pull, false, "the rules allow it, the token does not"},
	} {
		if d := a.Decide(s, c.repo, c.action); d.Allowed != c.allow {
			t.Errorf("%s: %s on %s allowed=%v (%s), want %v", c.why, c.action, c.repo, d.Allowed, d.Reason(), c.allow)
		}
	}

	// A token the rules no longer back (bob lost access) grants nothing.
	revoked, _, err := a.tokens.issue("mallory", []Access{pullPath2()})
	if err != nil {
		t.Fatal(err)
	}
	s, err = bearer(a, revoked)
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Decide(s, "path2/app", Pull); d.Allowed {
		t.Errorf("a token granting what a deny rule forbids was honoured: %s", d.Reason())
	}
}

func TestForgedTokensAreRefused(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthorizer(t, policyConfig(), clock)
	now := clock.Now()
	key := a.tokens.key
	_, otherPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustPKIX(t, key.Public().Key)})
	good := sign(t, jwt.SigningMethodEdDSA, key.Private(), key.ID(), claimsAt(now, "shoal", pullPath2()))
	if _, err := bearer(a, good); err != nil {
		t.Fatalf("the untampered control token: %v", err)
	}
	with := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := claimsAt(now, "shoal", pullPath2())
		mod(c)
		return c
	}
	noneToken, err := jwt.NewWithClaims(jwt.SigningMethodNone, claimsAt(now, "shoal", pullPath2())).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(
		`{"iss":"shoal","sub":"alice","aud":"shoal","exp":`+itoa(int(now.Add(time.Hour).Unix()))+`,"access":[{"type":"repository","name":"path2/app","actions":["pull","push","delete"]}]}`)) + "." + parts[2]
	refresh, err := a.tokens.issueRefresh("alice", "fp")
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ name, token string }{
		{"another service", sign(t, jwt.SigningMethodEdDSA, key.Private(), key.ID(), with(func(c jwt.MapClaims) { c["aud"] = "other-registry" }))},
		{"no audience", sign(t, jwt.SigningMethodEdDSA, key.Private(), key.ID(), with(func(c jwt.MapClaims) { delete(c, "aud") }))},
		{"expired", sign(t, jwt.SigningMethodEdDSA, key.Private(), key.ID(), with(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() }))},
		{"no expiry", sign(t, jwt.SigningMethodEdDSA, key.Private(), key.ID(), with(func(c jwt.MapClaims) { delete(c, "exp") }))},
		{"not yet valid", sign(t, jwt.SigningMethodEdDSA, key.Private(), key.ID(), with(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() }))},
		{"issued in the future", sign(t, jwt.SigningMethodEdDSA, key.Private(), key.ID(), with(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() }))},
		{"wrong signature (another key, our kid)", sign(t, jwt.SigningMethodEdDSA, otherPriv, key.ID(), claimsAt(now, "shoal", pullPath2()))},
		{"another kid", sign(t, jwt.SigningMethodEdDSA, key.Private(), "other-kid", claimsAt(now, "shoal", pullPath2()))},
		{"no kid", sign(t, jwt.SigningMethodEdDSA, key.Private(), "", claimsAt(now, "shoal", pullPath2()))},
		{"unknown issuer", sign(t, jwt.SigningMethodEdDSA, key.Private(), key.ID(), claimsAt(now, "evil", pullPath2()))},
		{"alg none", noneToken},
		{"HS256 with the public key (PEM) as secret", sign(t, jwt.SigningMethodHS256, pubPEM, key.ID(), claimsAt(now, "shoal", pullPath2()))},
		{"HS256 with the raw public key as secret", sign(t, jwt.SigningMethodHS256, []byte(key.Public().Key), key.ID(), claimsAt(now, "shoal", pullPath2()))},
		{"payload swapped under a valid signature", tampered},
		{"signature stripped", parts[0] + "." + parts[1] + "."},
		{"a refresh token", refresh},
		{"garbage", "not-a-token"},
		{"three garbage parts", "a.b.c"},
		{"empty", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := bearer(a, c.token)
			if !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("Authenticate = %+v, %v; want ErrBadCredentials", s, err)
			}
			t.Log(err)
		})
	}
}

func TestTokenExpiryHasASmallLeeway(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthorizer(t, policyConfig(), clock)
	raw, _, err := a.tokens.issue("alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Verified once while fresh, so the checks below also go through the
	// cache of verified tokens, which must expire them all the same.
	if _, err := bearer(a, raw); err != nil {
		t.Fatalf("a fresh token: %v", err)
	}
	clock.Advance(a.cfg.Token.TTL + tokenLeeway/2)
	if _, err := bearer(a, raw); err != nil {
		t.Errorf("a token just past its expiry, within the leeway: %v", err)
	}
	clock.Advance(tokenLeeway)
	if _, err := bearer(a, raw); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("a token past expiry and leeway: %v, want ErrBadCredentials", err)
	}
}

// externalIssuers writes an ECDSA P-256, an RSA and an Ed25519 issuer's
// public keys and returns their private keys and the config naming them.
func externalIssuers(t *testing.T) (ec *ecdsa.PrivateKey, rs *rsa.PrivateKey, ed ed25519.PrivateKey, issuers []ExternalIssuer) {
	t.Helper()
	dir := t.TempDir()
	var err error
	if ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if rs, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if _, ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	write := func(name string, pub any) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustPKIX(t, pub)}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	issuers = []ExternalIssuer{
		{Issuer: "ec.example.com", PublicKey: write("ec.pem", &ec.PublicKey)},
		{Issuer: "rsa.example.com", PublicKey: write("rsa.pem", &rs.PublicKey)},
		{Issuer: "ed.example.com", PublicKey: write("ed.pem", ed.Public())},
	}
	return ec, rs, ed, issuers
}

func mustPKIX(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestExternalIssuerTokens(t *testing.T) {
	clock := newTestClock()
	now := clock.Now()
	ec, rs, ed, issuers := externalIssuers(t)
	cfg := policyConfig()
	cfg.Token.Issuers = issuers
	a := newTestAuthorizer(t, cfg, clock)
	rsaPEM, err := os.ReadFile(issuers[1].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	grant := Access{Type: "repository", Name: "vendor/tool", Actions: []string{"pull", "push"}}

	for _, c := range []struct {
		name  string
		token string
		ok    bool
	}{
		{"ES256 from the ECDSA issuer", sign(t, jwt.SigningMethodES256, ec, "", claimsAt(now, "ec.example.com", grant)), true},
		{"RS256 from the RSA issuer", sign(t, jwt.SigningMethodRS256, rs, "", claimsAt(now, "rsa.example.com", grant)), true},
		{"PS256 from the RSA issuer", sign(t, jwt.SigningMethodPS256, rs, "", claimsAt(now, "rsa.example.com", grant)), true},
		{"EdDSA from the Ed25519 issuer", sign(t, jwt.SigningMethodEdDSA, ed, "", claimsAt(now, "ed.example.com", grant)), true},
		{"ES384 from a P-256 key", sign(t, jwt.SigningMethodES384, mustP384(t), "", claimsAt(now, "ec.example.com", grant)), false},
		{"the RSA issuer's name, signed by the ECDSA key", sign(t, jwt.SigningMethodES256, ec, "", claimsAt(now, "rsa.example.com", grant)), false},
		{"the ECDSA issuer's name, signed by the origin's key", sign(t, jwt.SigningMethodEdDSA, a.tokens.key.Private(), a.tokens.key.ID(), claimsAt(now, "ec.example.com", grant)), false},
		{"the origin's name, signed by an issuer", sign(t, jwt.SigningMethodES256, ec, a.tokens.key.ID(), claimsAt(now, "shoal", grant)), false},
		{"HS256 with the RSA issuer's public key as secret", sign(t, jwt.SigningMethodHS256, rsaPEM, "", claimsAt(now, "rsa.example.com", grant)), false},
		{"an issuer's token for another service", sign(t, jwt.SigningMethodES256, ec, "", func() jwt.MapClaims {
			c := claimsAt(now, "ec.example.com", grant)
			c["aud"] = []string{"other"}
			return c
		}()), false},
		{"an issuer's token with a list audience naming us", sign(t, jwt.SigningMethodES256, ec, "", func() jwt.MapClaims {
			c := claimsAt(now, "ec.example.com", grant)
			c["aud"] = []string{"other", "shoal"}
			return c
		}()), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := bearer(a, c.token)
			if c.ok && err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if !c.ok && !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("Authenticate = %+v, %v; want ErrBadCredentials", s, err)
			}
		})
	}

	// Its grants decide, without any allow rule for alice on vendor/...
	s, err := bearer(a, sign(t, jwt.SigningMethodES256, ec, "", claimsAt(now, "ec.example.com", grant, pullPath2())))
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Decide(s, "vendor/tool", Push); !d.Allowed {
		t.Errorf("push granted by the external token: %s", d.Reason())
	}
	if d := a.Decide(s, "vendor/other", Pull); d.Allowed {
		t.Errorf("pull on a repository the external token does not name was allowed: %s", d.Reason())
	}
	// ... but deny rules still apply (mallory may not pull path2).
	m := claimsAt(now, "ec.example.com", pullPath2())
	m["sub"] = "mallory"
	s, err = bearer(a, sign(t, jwt.SigningMethodES256, ec, "", m))
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Decide(s, "path2/app", Pull); d.Allowed || d.Rule != 0 {
		t.Errorf("an external token for what deny rule 0 forbids: %+v, want denied by rule 0", d)
	}
}

func mustP384(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestExternalIssuerKeyFiles(t *testing.T) {
	dir := t.TempDir()
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"weak.pem":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustPKIX(t, &weak.PublicKey)}),
		"empty.pem": []byte("not pem at all\n"),
		"priv.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ file, want string }{
		{"weak.pem", "1024 bits is too weak"},
		{"empty.pem", "no PEM public key"},
		{"priv.pem", `"PRIVATE KEY" is no public key`},
		{"missing.pem", "no such file"},
	} {
		cfg := policyConfig()
		cfg.Token.Issuers = []ExternalIssuer{{Issuer: "x.example.com", PublicKey: filepath.Join(dir, c.file)}}
		_, err := New(cfg, Options{Key: mustKey(t)})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "token.issuers[0]") {
			t.Errorf("issuer key %s: New = %v, want an error naming token.issuers[0] and containing %q", c.file, err, c.want)
		}
	}
}

// TestVerifierVerifyToken: an agent holding the origin's public keys
// reads the origin's access tokens as the origin does (subject, access,
// the same expiry leeway) and refuses what the origin would refuse as an
// access token: another service, a refresh token, a capability, another
// key, a tampered or an expired token.
func TestVerifierVerifyToken(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthorizer(t, policyConfig(), clock)
	v := NewVerifier(a.tokens.key.Public())
	v.SetClock(clock.Now)
	raw, _, err := a.tokens.issue("alice", []Access{pullPath2()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.VerifyToken(raw, "shoal")
	if err != nil {
		t.Fatalf("the origin's token for alice: %v", err)
	}
	if c.Subject != "alice" || !c.Allows("path2/app", Pull) || c.Allows("path2/other", Pull) {
		t.Errorf("claims %+v: want alice, pull on path2/app only", c)
	}

	other, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	refresh, err := a.tokens.issueRefresh("alice", "fingerprint")
	if err != nil {
		t.Fatal(err)
	}
	capability, err := a.tokens.key.IssueCapabilityAt(digest.FromString("a blob"), clock.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, raw, service string
		unknownKey         bool
	}{
		{"another service", raw, "other", false},
		{"a refresh token", refresh, "shoal", false},
		{"a capability", capability, "shoal", false},
		{"another key's token", sign(t, jwt.SigningMethodEdDSA, other.Private(), other.ID(), claimsAt(clock.Now(), "shoal", pullPath2())), "shoal", true},
		{"a tampered token", raw[:len(raw)-4] + "AAAA", "shoal", false},
		{"an HS256 token", sign(t, jwt.SigningMethodHS256, []byte(a.tokens.key.Public().Key), a.tokens.key.ID(), claimsAt(clock.Now(), "shoal", pullPath2())), "shoal", false},
	} {
		_, err := v.VerifyToken(tc.raw, tc.service)
		if !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%s: %v, want ErrBadCredentials", tc.name, err)
		}
		if errors.Is(err, ErrUnknownKey) != tc.unknownKey {
			t.Errorf("%s: %v: ErrUnknownKey %v, want %v", tc.name, err, !tc.unknownKey, tc.unknownKey)
		}
	}

	clock.Advance(a.cfg.Token.TTL + tokenLeeway/2)
	if _, err := v.VerifyToken(raw, "shoal"); err != nil {
		t.Errorf("a token just past its expiry, within the leeway: %v", err)
	}
	clock.Advance(tokenLeeway)
	if _, err := v.VerifyToken(raw, "shoal"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("a token past expiry and leeway: %v, want ErrBadCredentials", err)
	}
}
