package auth

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// metainfoContext starts every signed metainfo encoding, so that a
// signature over it can never be taken for one over anything else the
// origin key signs (JWS inputs start with a base64 header, never this).
// Metainfo of a scheme other than metainfo.PerPiece is signed under
// metainfoContextV2, followed by the scheme: an agent that knows no
// schemes (before Chained) refuses it as unsigned rather than take its
// chaining values for piece hashes, and no signature can be moved from
// one scheme to another.
const (
	metainfoContext   = "shoal metainfo signature v1\x00"
	metainfoContextV2 = "shoal metainfo signature v2\x00"
)

// ErrBadMetainfoSignature is wrapped by every refusal of VerifyMetainfo.
var ErrBadMetainfoSignature = errors.New("metainfo not signed by the origin")

// metainfoSigningInput is the canonical encoding the signature covers:
//
//	context | digest length u8 | digest | size u64 | piece length u64
//	| SHA-256 of the concatenated piece hashes
//
// for PerPiece metainfo (what every origin signed before schemes), and
//
//	context v2 | scheme u8 | digest length u8 | ... as above
//
// for the others,
// integers big-endian. Hashing the piece hashes keeps the input small for
// any number of pieces; it binds them as well as the list itself would.
func metainfoSigningInput(m *metainfo.Metainfo) ([]byte, error) {
	d := string(m.Digest)
	if len(d) > 255 {
		return nil, fmt.Errorf("digest %q longer than 255 bytes", d)
	}
	h := sha256.New()
	for _, ph := range m.PieceHashes {
		h.Write(ph[:])
	}
	b := make([]byte, 0, len(metainfoContextV2)+2+len(d)+16+sha256.Size)
	if m.Scheme == metainfo.PerPiece {
		b = append(b, metainfoContext...)
	} else {
		b = append(b, metainfoContextV2...)
		b = append(b, byte(m.Scheme))
	}
	b = append(b, byte(len(d)))
	b = append(b, d...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(m.PieceLength))
	return h.Sum(b), nil
}

// SignMetainfo signs m, setting m.Signature and m.KeyID.
func (k *Key) SignMetainfo(m *metainfo.Metainfo) error {
	in, err := metainfoSigningInput(m)
	if err != nil {
		return fmt.Errorf("signing metainfo: %w", err)
	}
	m.Signature = ed25519.Sign(k.priv, in)
	m.KeyID = k.id
	return nil
}

// VerifyMetainfo checks that m carries a signature, by one of the keys
// held, over its digest, size, piece length, scheme and piece hashes. A refusal
// wraps ErrBadMetainfoSignature, and ErrUnknownKey when m names a key not
// held.
func (v *Verifier) VerifyMetainfo(m *metainfo.Metainfo) error {
	if len(m.Signature) == 0 {
		return fmt.Errorf("metainfo of %s: %w: it carries no signature", m.Digest, ErrBadMetainfoSignature)
	}
	k, ok := v.key(m.KeyID)
	if !ok {
		return fmt.Errorf("metainfo of %s: %w: key id %q: %w", m.Digest, ErrBadMetainfoSignature, m.KeyID, ErrUnknownKey)
	}
	in, err := metainfoSigningInput(m)
	if err != nil {
		return fmt.Errorf("metainfo of %s: %w: %w", m.Digest, ErrBadMetainfoSignature, err)
	}
	if len(m.Signature) != ed25519.SignatureSize || !ed25519.Verify(k, in, m.Signature) {
		return fmt.Errorf("metainfo of %s: %w: the signature by key %q does not match its contents", m.Digest, ErrBadMetainfoSignature, m.KeyID)
	}
	return nil
}
