package metainfo

import (
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/proto/peerpb"
)

// Proto converts m to its wire form for shoal.peer.v1.Peer/GetMetainfo.
func (m *Metainfo) Proto() *peerpb.Metainfo {
	hashes := make([]byte, 0, len(m.PieceHashes)*HashSize)
	for _, h := range m.PieceHashes {
		hashes = append(hashes, h[:]...)
	}
	return &peerpb.Metainfo{Digest: string(m.Digest), Size: m.Size, PieceLength: m.PieceLength, PieceHashes: hashes,
		Scheme: peerpb.PieceHashScheme(m.Scheme), Signature: m.Signature, KeyId: m.KeyID}
}

// FromProto converts a GetMetainfo answer and validates it. Callers should
// also check that the digest is the one they asked for, and the origin's
// signature (auth.Verifier.VerifyMetainfo): validation says the fields are
// consistent, not that the origin computed them.
func FromProto(p *peerpb.Metainfo) (*Metainfo, error) {
	raw := p.GetPieceHashes()
	if len(raw)%HashSize != 0 {
		return nil, fmt.Errorf("decoding metainfo for %s: %d bytes of piece hashes is not a multiple of %d", p.GetDigest(), len(raw), HashSize)
	}
	m := &Metainfo{Digest: digest.Digest(p.GetDigest()), Size: p.GetSize(), PieceLength: p.GetPieceLength(),
		Scheme: Scheme(p.GetScheme()), PieceHashes: make([][HashSize]byte, len(raw)/HashSize),
		Signature: p.GetSignature(), KeyID: p.GetKeyId()}
	if int32(m.Scheme) != int32(p.GetScheme()) {
		return nil, fmt.Errorf("decoding metainfo for %s: unknown piece hash scheme %d", p.GetDigest(), p.GetScheme())
	}
	for i := range m.PieceHashes {
		copy(m.PieceHashes[i][:], raw[i*HashSize:])
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("decoding metainfo: %w", err)
	}
	return m, nil
}
