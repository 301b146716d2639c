package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/opencontainers/go-digest"
)

func newTestKey(t *testing.T) *Key {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signClaims signs arbitrary claims with k, as a forger holding k (or a
// test crafting edge cases) would.
func signClaims(t *testing.T, k *Key, claims jwt.Claims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k.Private())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCapabilityIsAcceptedForItsBlobOnly(t *testing.T) {
	k := newTestKey(t)
	d := digest.FromString("layer")
	tok, err := k.IssueCapability(d, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(k.Public())
	if err := v.VerifyCapability(tok, d); err != nil {
		t.Fatalf("a fresh capability for %s was refused: %v", d, err)
	}
	other := digest.FromString("another layer")
	err = v.VerifyCapability(tok, other)
	if !errors.Is(err, ErrInvalidCapability) || !strings.Contains(err.Error(), "another blob") {
		t.Fatalf("a capability for %s presented for %s: got %v, want an error saying it is for another blob", d, other, err)
	}
}

func TestCapabilityRefusals(t *testing.T) {
	k := newTestKey(t)
	other := newTestKey(t)
	d := digest.FromString("layer")
	now := time.Now()
	claims := func(mutate func(*jwt.RegisteredClaims)) jwt.RegisteredClaims {
		c := jwt.RegisteredClaims{Subject: d.String(), Audience: jwt.ClaimStrings{CapabilityAudience},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
		if mutate != nil {
			mutate(&c)
		}
		return c
	}
	valid := signClaims(t, k, claims(nil), k.ID())
	header, payload, _ := strings.Cut(valid, ".")
	payload, _, _ = strings.Cut(payload, ".")

	// alg "none": the header says none, no signature.
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"` + k.ID() + `"}`))
	algNone := noneHeader + "." + payload + "."
	// HS256 keyed with the public key: the classic algorithm confusion.
	hsHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"` + k.ID() + `"}`))
	mac := hmac.New(sha256.New, k.Public().Key)
	mac.Write([]byte(hsHeader + "." + payload))
	hmacTok := hsHeader + "." + payload + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	// A valid token's header and claims with another key's signature.
	otherSig := signClaims(t, other, claims(nil), k.ID())
	otherSigPart := strings.Split(otherSig, ".")[2]
	swappedSig := header + "." + payload + "." + otherSigPart

	cases := []struct {
		name, tok, want string
		unknownKey      bool
	}{
		{name: "none presented", tok: "", want: "none presented"},
		{name: "garbage", tok: "not-a-token", want: "malformed"},
		{name: "alg none", tok: algNone, want: "signing method"},
		{name: "HMAC keyed with the public key", tok: hmacTok, want: "signing method"},
		{name: "signed by another key under its own kid", tok: signClaims(t, other, claims(nil), other.ID()), want: "unknown origin key", unknownKey: true},
		{name: "signed by another key claiming the origin's kid", tok: swappedSig, want: "signature is invalid"},
		{name: "no kid", tok: signClaims(t, k, claims(nil), ""), want: "no kid"},
		{name: "expired", tok: signClaims(t, k, claims(func(c *jwt.RegisteredClaims) {
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-2 * capabilityLeeway))
		}), k.ID()), want: "expired"},
		{name: "no expiry", tok: signClaims(t, k, claims(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil }), k.ID()), want: "exp"},
		{name: "registry token audience", tok: signClaims(t, k, claims(func(c *jwt.RegisteredClaims) {
			c.Audience = jwt.ClaimStrings{"shoal"}
		}), k.ID()), want: "audience"},
		{name: "no audience", tok: signClaims(t, k, claims(func(c *jwt.RegisteredClaims) { c.Audience = nil }), k.ID()), want: "aud"},
		{name: "another blob", tok: signClaims(t, k, claims(func(c *jwt.RegisteredClaims) {
			c.Subject = digest.FromString("other").String()
		}), k.ID()), want: "another blob"},
		{name: "too long", tok: strings.Repeat("a", maxCapability+1), want: "more than"},
	}
	v := NewVerifier(k.Public())
	if err := v.VerifyCapability(valid, d); err != nil {
		t.Fatalf("the untampered token was refused: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := v.VerifyCapability(tc.tok, d)
			if err == nil {
				t.Fatal("accepted, want a refusal")
			}
			if !errors.Is(err, ErrInvalidCapability) {
				t.Errorf("error %q does not wrap ErrInvalidCapability", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if got := errors.Is(err, ErrUnknownKey); got != tc.unknownKey {
				t.Errorf("errors.Is(err, ErrUnknownKey) = %v, want %v (err %q)", got, tc.unknownKey, err)
			}
		})
	}
}

func TestCapabilityExpiresAfterItsTTL(t *testing.T) {
	k := newTestKey(t)
	d := digest.FromString("layer")
	issued := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tok, err := k.IssueCapabilityAt(d, issued, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(k.Public())
	for _, tc := range []struct {
		at time.Time
		ok bool
	}{
		{issued.Add(29 * time.Minute), true},
		// Within the clock-skew leeway past exp.
		{issued.Add(30*time.Minute + capabilityLeeway/2), true},
		{issued.Add(30*time.Minute + 2*capabilityLeeway), false},
	} {
		v.SetClock(func() time.Time { return tc.at })
		err := v.VerifyCapability(tok, d)
		if (err == nil) != tc.ok {
			t.Errorf("at issue + %s: err = %v, want accepted = %v", tc.at.Sub(issued), err, tc.ok)
		}
	}
}

func TestVerifierHoldsSeveralKeysForRotation(t *testing.T) {
	old, cur := newTestKey(t), newTestKey(t)
	d := digest.FromString("layer")
	v := NewVerifier(old.Public(), cur.Public())
	for _, k := range []*Key{old, cur} {
		tok, err := k.IssueCapability(d, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.VerifyCapability(tok, d); err != nil {
			t.Errorf("capability by key %s refused by a verifier holding it: %v", k.ID(), err)
		}
	}
	v.SetKeys([]PublicKey{cur.Public()})
	tok, _ := old.IssueCapability(d, time.Minute)
	if err := v.VerifyCapability(tok, d); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("capability by a key dropped from the verifier: got %v, want ErrUnknownKey", err)
	}
	if got := v.Keys(); len(got) != 1 || got[0].ID != cur.ID() {
		t.Errorf("Keys() = %v, want only %s", got, cur.ID())
	}
}

func TestIssueCapabilityRefusesNonsense(t *testing.T) {
	k := newTestKey(t)
	if _, err := k.IssueCapability("sha256:nothex", time.Minute); err == nil {
		t.Error("a capability for an invalid digest was issued")
	}
	if _, err := k.IssueCapability(digest.FromString("x"), 0); err == nil {
		t.Error("a capability with ttl 0 was issued")
	}
}

func TestPublicKeysRoundTrip(t *testing.T) {
	a, b := newTestKey(t), newTestKey(t)
	pa, err := a.Public().MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := b.Public().MarshalPEM()
	keys, err := ParsePublicKeysPEM(append(pa, pb...))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID != a.ID() || keys[1].ID != b.ID() || !keys[0].Key.Equal(a.Public().Key) {
		t.Fatalf("parsed %v, want the keys %s and %s", keys, a.ID(), b.ID())
	}
	priv, _ := a.MarshalPEM()
	if _, err := ParsePublicKeysPEM(priv); err == nil || !strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("a private key file given as a public key: got %v, want an error naming the block type", err)
	}

	js := NewKeySet(a.Public(), b.Public())
	if js.Keys[0].Alg != "EdDSA" || js.Keys[0].Kid != a.ID() {
		t.Errorf("key set entry %+v, want alg EdDSA and kid %s", js.Keys[0], a.ID())
	}
	enc := []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"` + a.ID() + `","x":"` + js.Keys[0].X + `"}]}`)
	got, err := ParseKeySet(enc)
	if err != nil || len(got) != 1 || !got[0].Key.Equal(a.Public().Key) {
		t.Fatalf("ParseKeySet = %v, %v; want key %s", got, err, a.ID())
	}
	wrongKid := []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"` + b.ID() + `","x":"` + js.Keys[0].X + `"}]}`)
	if _, err := ParseKeySet(wrongKid); err == nil {
		t.Error("a key set entry whose kid is another key's was accepted")
	}
	if _, err := ParseKeySet([]byte(`{"keys":[]}`)); err == nil {
		t.Error("an empty key set was accepted")
	}
}
