package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
)

// tokenLeeway is the clock skew tolerated on exp, nbf and iat: origin nodes
// and external issuers keep time with NTP, which holds them far closer.
const tokenLeeway = 30 * time.Second

// acceptedAlgs are the only signature algorithms a token may name. Not
// "none", and no HMAC: with HMAC a verifier holding a public key could be
// fooled into using it as the shared secret. Each key further pins its own
// family (keyAlgs).
var acceptedAlgs = []string{"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

// tokens issues and verifies registry bearer tokens and refresh tokens.
type tokens struct {
	cfg     TokenConfig
	key     *Key
	now     func() time.Time
	issuers map[string][]issuerKey // external issuers' keys by iss
	parser  *jwt.Parser
	// verified remembers access tokens whose signature checked out, by
	// the token itself, until they expire: a client sends the same token
	// with every request, and an Ed25519 check costs more than the request
	// it guards. A token is immutable, so only its lifetime needs checking
	// again. Keyed by the whole token, not a digest of it: the map's own
	// hash of a few hundred bytes is cheaper than SHA-256, and an exact
	// match needs no collision argument.
	verified *lru.Cache[string, verifiedToken]
}

// verifiedTokens bounds the verified-token cache: one entry per client
// token in use, the token (under a kilobyte) and its claims each.
const verifiedTokens = 16384

// verifiedToken is a cached verification: the claims and when they stop
// being accepted (exp plus tokenLeeway).
type verifiedToken struct {
	claims *Claims
	until  time.Time
}

// issuerKey is an external issuer's public key and the algorithms it may
// sign with.
type issuerKey struct {
	key  crypto.PublicKey
	algs []string
}

// tokenClaims are the claims of the tokens issued and accepted. Audience
// is read as a string or a list, as RFC 7519 allows.
type tokenClaims struct {
	jwt.RegisteredClaims
	Access []Access `json:"access"`
	// Fingerprint is on refresh tokens only: the user's password entry
	// they were issued against (htpasswd.fingerprint).
	Fingerprint string `json:"pwh,omitempty"`
}

func newTokens(cfg TokenConfig, key *Key, now func() time.Time) (*tokens, error) {
	t := &tokens{cfg: cfg, key: key, now: now, issuers: map[string][]issuerKey{}}
	for i, is := range cfg.Issuers {
		keys, err := loadIssuerKeys(is.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("token.issuers[%d] (%s): %w", i, is.Issuer, err)
		}
		t.issuers[is.Issuer] = append(t.issuers[is.Issuer], keys...)
	}
	t.parser = tokenParser(acceptedAlgs, now)
	verified, err := lru.New[string, verifiedToken](verifiedTokens)
	if err != nil {
		return nil, err
	}
	t.verified = verified
	return t, nil
}

// tokenParser reads tokens as the origin does, wherever they are checked:
// one of algs, exp required, iat checked, tokenLeeway of clock skew.
func tokenParser(algs []string, now func() time.Time) *jwt.Parser {
	return jwt.NewParser(
		jwt.WithValidMethods(algs),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithTimeFunc(now),
	)
}

// loadIssuerKeys reads the PEM public keys (or certificates) in a file;
// several let an issuer rotate its key.
func loadIssuerKeys(path string) ([]issuerKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading public key: %w", err)
	}
	var keys []issuerKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		var pub crypto.PublicKey
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			return nil, fmt.Errorf("%s: PEM block %q is no public key (want PUBLIC KEY or CERTIFICATE)", path, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		algs, err := keyAlgs(pub)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		keys = append(keys, issuerKey{key: pub, algs: algs})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no PEM public key in it", path)
	}
	return keys, nil
}

// keyAlgs pins the algorithms a key verifies: its own family, and for
// ECDSA the one its curve is defined for.
func keyAlgs(pub crypto.PublicKey) ([]string, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return []string{"EdDSA"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []string{"ES256"}, nil
		case elliptic.P384():
			return []string{"ES384"}, nil
		case elliptic.P521():
			return []string{"ES512"}, nil
		}
		return nil, fmt.Errorf("ECDSA curve %s is not one of P-256, P-384, P-521", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits is too weak (want at least 2048)", k.N.BitLen())
		}
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, nil
	}
	return nil, fmt.Errorf("%T is not an Ed25519, ECDSA or RSA public key", pub)
}

// issue signs an access token for sub granting access.
func (t *tokens) issue(sub string, access []Access) (string, time.Time, error) {
	now := t.now()
	if access == nil {
		access = []Access{}
	}
	raw, err := t.sign(jwt.MapClaims{
		"iss":    t.cfg.Issuer,
		"sub":    sub,
		"aud":    t.cfg.Service,
		"exp":    now.Add(t.cfg.TTL).Unix(),
		"nbf":    now.Unix(),
		"iat":    now.Unix(),
		"jti":    tokenID(),
		"access": access,
	})
	return raw, now, err
}

// refreshAudience is the audience of refresh tokens: not the service, so
// that a refresh token is never accepted as an access token, nor an access
// token as a refresh token.
func (t *tokens) refreshAudience() string { return t.cfg.Service + "#refresh" }

// issueRefresh signs a refresh token for user, bound to the fingerprint of
// their password entry.
func (t *tokens) issueRefresh(user, fingerprint string) (string, error) {
	now := t.now()
	return t.sign(jwt.MapClaims{
		"iss": t.cfg.Issuer,
		"sub": user,
		"aud": t.refreshAudience(),
		"exp": now.Add(t.cfg.RefreshTTL).Unix(),
		"iat": now.Unix(),
		"jti": tokenID(),
		"pwh": fingerprint,
	})
}

func (t *tokens) sign(claims jwt.MapClaims) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = t.key.ID()
	raw, err := tok.SignedString(t.key.Private())
	if err != nil {
		return "", fmt.Errorf("signing a token: %w", err)
	}
	return raw, nil
}

// tokenID is a token's unique jti.
func tokenID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// verify checks an access token: signed by the origin's key or a
// configured issuer's, for this service, within its lifetime.
func (t *tokens) verify(raw string) (*Claims, error) {
	key := raw
	if v, ok := t.verified.Get(key); ok {
		if t.now().Before(v.until) {
			return v.claims, nil
		}
		t.verified.Remove(key)
	}
	c, err := t.parse(raw, t.cfg.Service, true)
	if err != nil {
		return nil, err
	}
	claims := &Claims{Issuer: c.Issuer, Subject: c.Subject, Audience: t.cfg.Service, Access: c.Access}
	if c.ExpiresAt != nil {
		t.verified.Add(key, verifiedToken{claims: claims, until: c.ExpiresAt.Add(tokenLeeway)})
	}
	return claims, nil
}

// verifyRefresh checks a refresh token the origin issued and returns it
// claims.
func (t *tokens) verifyRefresh(raw string) (*tokenClaims, error) {
	return t.parse(raw, t.refreshAudience(), false)
}

func (t *tokens) parse(raw, audience string, external bool) (*tokenClaims, error) {
	var c tokenClaims
	_, err := t.parser.ParseWithClaims(raw, &c, func(tok *jwt.Token) (any, error) {
		return t.verificationKey(tok, &c, external)
	})
	if err != nil {
		return nil, fmt.Errorf("bearer token: %w: %w", err, ErrBadCredentials)
	}
	if err := checkAudience(&c, audience); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkAudience refuses a token not meant for audience. Checked here
// rather than with jwt.WithAudience, so that the error names the audience.
func checkAudience(c *tokenClaims, audience string) error {
	if !slices.Contains(c.Audience, audience) {
		return fmt.Errorf("bearer token: audience %q, want %q: %w", []string(c.Audience), audience, ErrBadCredentials)
	}
	return nil
}

// VerifyToken checks raw as the origin checks an access token it issued:
// signed with EdDSA by one of the keys held (named by its kid), for
// audience service, within its lifetime (the origin's leeway for clock
// skew). Agents use it to tell whose a token is while the origin cannot be
// asked; what the token may do stays the origin's to decide. Refusals wrap
// ErrBadCredentials, and ErrUnknownKey when the kid is not held. Tokens of
// external issuers are refused: only the origin's keys are held.
func (v *Verifier) VerifyToken(raw, service string) (*Claims, error) {
	var c tokenClaims
	_, err := tokenParser([]string{jwt.SigningMethodEdDSA.Alg()}, v.now).ParseWithClaims(raw, &c, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		k, ok := v.key(kid)
		if !ok {
			return nil, fmt.Errorf("key id %q: %w", kid, ErrUnknownKey)
		}
		return k, nil
	})
	if err != nil {
		return nil, fmt.Errorf("bearer token: %w: %w", err, ErrBadCredentials)
	}
	if err := checkAudience(&c, service); err != nil {
		return nil, err
	}
	return &Claims{Issuer: c.Issuer, Subject: c.Subject, Audience: service, Access: c.Access}, nil
}

// verificationKey picks the key a token must verify with, from its issuer:
// the origin's own key, or (when external is allowed) a configured
// issuer's keys that may sign with the token's algorithm.
func (t *tokens) verificationKey(tok *jwt.Token, c *tokenClaims, external bool) (any, error) {
	alg := tok.Method.Alg()
	if c.Issuer == t.cfg.Issuer {
		if alg != jwt.SigningMethodEdDSA.Alg() {
			return nil, fmt.Errorf("algorithm %s: the origin signs with EdDSA", alg)
		}
		if kid, _ := tok.Header["kid"].(string); kid != t.key.ID() {
			return nil, fmt.Errorf("key id %q is not the origin's key %s", kid, t.key.ID())
		}
		return t.key.Public().Key, nil
	}
	keys := t.issuers[c.Issuer]
	if !external || len(keys) == 0 {
		return nil, fmt.Errorf("issuer %q is not trusted", c.Issuer)
	}
	var set jwt.VerificationKeySet
	for _, k := range keys {
		if slices.Contains(k.algs, alg) {
			set.Keys = append(set.Keys, k.key)
		}
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("algorithm %s: issuer %q has no key of that kind", alg, c.Issuer)
	}
	return set, nil
}
