package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// KeyPath is where an origin cluster keeps its shared signing key when none
// is configured: beside Shoal's other data, outside registry:2's tree, so
// that every origin node on the same storage signs with the same key.
const KeyPath = "/shoal/v1/auth/signing-key.pem"

// Key is the origin cluster's Ed25519 signing key: it signs registry
// tokens, P2P capabilities and piece metainfo. Agents, seeders and trackers
// hold only its public half (PublicKey).
type Key struct {
	priv ed25519.PrivateKey
	id   string
}

// PublicKey is the verifying half of a Key, with its key id.
type PublicKey struct {
	Key ed25519.PublicKey
	ID  string
}

// KeyID is a key's id: the first 16 characters of the base64url SHA-256 of
// the public key. Tokens name their key with it (the JWT "kid" header).
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:])[:16]
}

// NewKey returns a Key for priv.
func NewKey(priv ed25519.PrivateKey) *Key {
	return &Key{priv: priv, id: KeyID(priv.Public().(ed25519.PublicKey))}
}

// GenerateKey returns a new random key.
func GenerateKey() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating signing key: %w", err)
	}
	return NewKey(priv), nil
}

// ID returns the key id.
func (k *Key) ID() string { return k.id }

// Private returns the private key, for signing.
func (k *Key) Private() ed25519.PrivateKey { return k.priv }

// Public returns the verifying half.
func (k *Key) Public() PublicKey {
	return PublicKey{Key: k.priv.Public().(ed25519.PublicKey), ID: k.id}
}

// MarshalPEM encodes the private key as PKCS #8 PEM ("PRIVATE KEY"), the
// form `openssl genpkey -algorithm ed25519` writes.
func (k *Key) MarshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM decodes an Ed25519 private key in PKCS #8 PEM.
func ParseKeyPEM(b []byte) (*Key, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("signing key: no PEM \"PRIVATE KEY\" block (want an Ed25519 key in PKCS #8, as `openssl genpkey -algorithm ed25519` writes)")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key: %T, want an Ed25519 key", k)
	}
	return NewKey(priv), nil
}

// LoadKeyFile reads an Ed25519 private key from a PEM file.
func LoadKeyFile(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	k, err := ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadOrCreateKey returns the cluster's key kept at KeyPath on d, creating
// it when absent. Storage offers no create-if-absent, so a node that
// creates the key writes it, waits settle, and reads back what is there:
// nodes racing at first start end up with the last writer's key (as the GC
// lease does). A site that wants the key out of storage configures a file
// instead (LoadKeyFile).
func LoadOrCreateKey(ctx context.Context, d storage.Driver, settle time.Duration) (*Key, error) {
	b, err := d.GetContent(ctx, KeyPath)
	var notFound storage.PathNotFoundError
	if errors.As(err, &notFound) {
		// The new key's own errors use their own names: err must stay the
		// one of the read below, or a first start would fail on the
		// not-found that brought it here.
		k, genErr := GenerateKey()
		if genErr != nil {
			return nil, genErr
		}
		pemBytes, pemErr := k.MarshalPEM()
		if pemErr != nil {
			return nil, pemErr
		}
		if err := d.PutContent(ctx, KeyPath, pemBytes); err != nil {
			return nil, fmt.Errorf("storing the signing key at %s: %w", KeyPath, err)
		}
		select {
		case <-time.After(settle):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		b, err = d.GetContent(ctx, KeyPath)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the signing key at %s: %w", KeyPath, err)
	}
	k, err := ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", KeyPath, d.Name(), err)
	}
	return k, nil
}
