package auth

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// KeysPath is where the origin publishes its public keys (KeySet JSON) on
// its registry listener: agents fetch them to verify capabilities and
// metainfo signatures.
const KeysPath = "/shoal/v1/keys"

// MarshalPEM encodes the public key as PKIX PEM ("PUBLIC KEY"), the form
// `openssl pkey -pubout` writes.
func (p PublicKey) MarshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(p.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKeysPEM decodes every "PUBLIC KEY" block of b (Ed25519, PKIX),
// so that one file can hold the keys of a rotation. A private key is
// refused: only the origin holds one.
func ParsePublicKeysPEM(b []byte) ([]PublicKey, error) {
	var keys []PublicKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("origin public key: a PEM %q block, want \"PUBLIC KEY\" (`openssl pkey -in signing-key.pem -pubout` makes one)", block.Type)
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("origin public key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("origin public key: %T, want an Ed25519 key", k)
		}
		keys = append(keys, PublicKey{Key: pub, ID: KeyID(pub)})
	}
	if len(keys) == 0 {
		return nil, errors.New("origin public key: no PEM \"PUBLIC KEY\" block")
	}
	return keys, nil
}

// LoadPublicKeyFile reads the public keys in a PEM file.
func LoadPublicKeyFile(path string) ([]PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := ParsePublicKeysPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// KeySet is the JSON the origin serves at KeysPath: a JSON Web Key Set
// (RFC 7517) of Ed25519 keys (RFC 8037), which JOSE libraries read as is.
type KeySet struct {
	Keys []JWK `json:"keys"`
}

// JWK is one public key of a KeySet.
type JWK struct {
	Kty string `json:"kty"` // "OKP"
	Crv string `json:"crv"` // "Ed25519"
	Alg string `json:"alg"` // "EdDSA"
	Use string `json:"use"` // "sig"
	Kid string `json:"kid"`
	// X is the public key, base64url without padding.
	X string `json:"x"`
}

// NewKeySet returns the key set publishing keys.
func NewKeySet(keys ...PublicKey) KeySet {
	ks := KeySet{Keys: make([]JWK, 0, len(keys))}
	for _, k := range keys {
		ks.Keys = append(ks.Keys, JWK{Kty: "OKP", Crv: "Ed25519", Alg: "EdDSA", Use: "sig", Kid: k.ID,
			X: base64.RawURLEncoding.EncodeToString(k.Key)})
	}
	return ks
}

// ParseKeySet decodes a KeySet and returns its keys. A key of another type
// or whose kid is not its KeyID is refused.
func ParseKeySet(b []byte) ([]PublicKey, error) {
	var ks KeySet
	if err := json.Unmarshal(b, &ks); err != nil {
		return nil, fmt.Errorf("decoding the origin's key set: %w", err)
	}
	keys := make([]PublicKey, 0, len(ks.Keys))
	for _, j := range ks.Keys {
		if j.Kty != "OKP" || j.Crv != "Ed25519" || (j.Alg != "" && j.Alg != "EdDSA") {
			return nil, fmt.Errorf("origin key %q: kty %q crv %q alg %q, want an OKP Ed25519 key for EdDSA", j.Kid, j.Kty, j.Crv, j.Alg)
		}
		x, err := base64.RawURLEncoding.DecodeString(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("origin key %q: x is not a base64url Ed25519 public key", j.Kid)
		}
		pub := ed25519.PublicKey(x)
		if id := KeyID(pub); j.Kid != id {
			return nil, fmt.Errorf("origin key %q: the kid of this key is %q", j.Kid, id)
		}
		keys = append(keys, PublicKey{Key: pub, ID: j.Kid})
	}
	if len(keys) == 0 {
		return nil, errors.New("the origin's key set is empty")
	}
	return keys, nil
}
