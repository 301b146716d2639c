package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// CapabilityAudience is the "aud" of every P2P capability: it keeps a
// capability from being taken for a registry token (whose audience is the
// registry's service name) and the other way round.
const CapabilityAudience = "shoal-p2p"

// CapabilityHeader is the response header of an authorized blob HEAD or GET
// at the origin that carries a capability for the blob.
const CapabilityHeader = "Shoal-Capability"

// CapabilityMetadata is the gRPC metadata key in which agents present a
// capability to seeders and other agents (GetMetainfo, Exchange).
const CapabilityMetadata = "shoal-capability"

// maxCapability bounds the token accepted for parsing: one is ~250 bytes,
// and a peer must not make a verifier decode megabytes of base64.
const maxCapability = 4096

// capabilityLeeway absorbs clock differences between origins and hosts: a
// capability is checked on another machine than the one that issued it.
const capabilityLeeway = time.Minute

var (
	// ErrInvalidCapability is wrapped by every refusal of VerifyCapability:
	// servers answer it with PERMISSION_DENIED.
	ErrInvalidCapability = errors.New("invalid P2P capability")
	// ErrUnknownKey is wrapped when a token or signature names a key id the
	// verifier does not hold: the origin may have rotated its key, so
	// fetching its keys again is worth a try.
	ErrUnknownKey = errors.New("signed by an unknown origin key")
)

// IssueCapability returns a capability for blob d valid for ttl: a compact
// JWS (EdDSA, header kid = k's id) with claims sub = d, aud =
// CapabilityAudience, iat and exp. The origin hands one to an agent it let
// read the blob; seeders and agents serve the blob's metainfo and pieces
// only against one.
func (k *Key) IssueCapability(d digest.Digest, ttl time.Duration) (string, error) {
	return k.IssueCapabilityAt(d, time.Now(), ttl)
}

// IssueCapabilityAt is IssueCapability on a clock of the caller's: the
// capability is issued at now and expires at now + ttl.
func (k *Key) IssueCapabilityAt(d digest.Digest, now time.Time, ttl time.Duration) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("issuing a capability: %w", err)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("issuing a capability for %s: ttl %s is not positive", d, ttl)
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.RegisteredClaims{
		Subject:   d.String(),
		Audience:  jwt.ClaimStrings{CapabilityAudience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	})
	t.Header["kid"] = k.id
	s, err := t.SignedString(k.priv)
	if err != nil {
		return "", fmt.Errorf("signing a capability for %s: %w", d, err)
	}
	return s, nil
}

// WithCapability adds tok to an outgoing gRPC call's metadata.
func WithCapability(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, CapabilityMetadata, tok)
}

// CallCapability returns the capability an incoming gRPC call carries,
// empty without one.
func CallCapability(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(CapabilityMetadata); len(v) > 0 {
		return v[0]
	}
	return ""
}

// CapabilityDenied is the gRPC answer of server (who refuses, for the
// message) to a call whose capability failed verification with err.
func CapabilityDenied(server string, err error) error {
	return status.Errorf(codes.PermissionDenied, "%s: %v; present the capability the origin returns with an authorized blob HEAD in metadata %q",
		server, err, CapabilityMetadata)
}

// Verifier checks what the origin signed (capabilities and metainfo)
// against the origin cluster's public keys: several, so that a rotation
// can publish the new key beside the old. It is safe for concurrent use;
// SetKeys replaces the keys while others verify.
type Verifier struct {
	mu   sync.RWMutex
	keys map[string]ed25519.PublicKey
	now  func() time.Time
}

// NewVerifier returns a verifier holding keys.
func NewVerifier(keys ...PublicKey) *Verifier {
	v := &Verifier{now: time.Now}
	v.SetKeys(keys)
	return v
}

// SetKeys replaces the keys held.
func (v *Verifier) SetKeys(keys []PublicKey) {
	m := make(map[string]ed25519.PublicKey, len(keys))
	for _, k := range keys {
		m[k.ID] = k.Key
	}
	v.mu.Lock()
	v.keys = m
	v.mu.Unlock()
}

// Keys returns the keys held, ordered by id.
func (v *Verifier) Keys() []PublicKey {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]PublicKey, 0, len(v.keys))
	for id, k := range v.keys {
		out = append(out, PublicKey{Key: k, ID: id})
	}
	slices.SortFunc(out, func(a, b PublicKey) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// SetClock replaces the verifier's clock (tests of expiry).
func (v *Verifier) SetClock(now func() time.Time) { v.now = now }

func (v *Verifier) key(id string) (ed25519.PublicKey, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	k, ok := v.keys[id]
	return k, ok
}

// VerifyCapability checks that tok is a capability for d: signed with
// EdDSA by one of the keys held (named by its kid; alg "none", HMAC and
// every other algorithm are refused), for audience CapabilityAudience,
// subject d, and not expired (a minute's leeway for clock skew). Every
// refusal wraps ErrInvalidCapability, and ErrUnknownKey when the kid is not
// held; the message says which check failed.
func (v *Verifier) VerifyCapability(tok string, d digest.Digest) error {
	if tok == "" {
		return fmt.Errorf("%w for %s: none presented (the origin hands one out with an authorized blob HEAD or GET)", ErrInvalidCapability, d)
	}
	if len(tok) > maxCapability {
		return fmt.Errorf("%w for %s: %d bytes, more than %d", ErrInvalidCapability, d, len(tok), maxCapability)
	}
	keyfunc := func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("no kid in the header")
		}
		k, ok := v.key(kid)
		if !ok {
			return nil, fmt.Errorf("key id %q: %w", kid, ErrUnknownKey)
		}
		return k, nil
	}
	_, err := jwt.ParseWithClaims(tok, &jwt.RegisteredClaims{}, keyfunc,
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithAudience(CapabilityAudience),
		jwt.WithSubject(d.String()),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(capabilityLeeway),
		jwt.WithTimeFunc(v.now),
	)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenInvalidSubject) {
			return fmt.Errorf("%w for %s: issued for another blob: %w", ErrInvalidCapability, d, err)
		}
		return fmt.Errorf("%w for %s: %w", ErrInvalidCapability, d, err)
	}
	return nil
}
