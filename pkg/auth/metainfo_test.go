package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

func testMetainfo(t *testing.T) *metainfo.Metainfo {
	t.Helper()
	blob := bytes.Repeat([]byte("shoal"), 1000)
	m, err := metainfo.Compute(bytes.NewReader(blob), digest.FromBytes(blob), int64(len(blob)), 1024)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMetainfoSignatureCoversEveryField(t *testing.T) {
	k := newTestKey(t)
	v := NewVerifier(k.Public())
	m := testMetainfo(t)
	if m.Scheme != metainfo.Chained {
		t.Fatalf("test metainfo is %s, want chained", m.Scheme)
	}
	if err := k.SignMetainfo(m); err != nil {
		t.Fatal(err)
	}
	if m.KeyID != k.ID() || len(m.Signature) == 0 {
		t.Fatalf("signed metainfo carries key id %q and %d signature bytes, want %q and a signature", m.KeyID, len(m.Signature), k.ID())
	}
	// The signature survives the wire.
	wire, err := metainfo.FromProto(m.Proto())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyMetainfo(wire); err != nil {
		t.Fatalf("signed metainfo after a round trip through the proto: %v", err)
	}
	tamper := []struct {
		name string
		f    func(*metainfo.Metainfo)
	}{
		{"digest", func(m *metainfo.Metainfo) { m.Digest = digest.FromString("other") }},
		{"size", func(m *metainfo.Metainfo) { m.Size-- }},
		{"piece length", func(m *metainfo.Metainfo) { m.PieceLength *= 2 }},
		{"a piece hash", func(m *metainfo.Metainfo) { m.PieceHashes[2][0] ^= 1 }},
		{"piece order", func(m *metainfo.Metainfo) { m.PieceHashes[0], m.PieceHashes[1] = m.PieceHashes[1], m.PieceHashes[0] }},
		{"scheme", func(m *metainfo.Metainfo) { m.Scheme = metainfo.PerPiece }},
		{"signature", func(m *metainfo.Metainfo) { m.Signature[0] ^= 1 }},
		{"short signature", func(m *metainfo.Metainfo) { m.Signature = m.Signature[:10] }},
	}
	for _, tc := range tamper {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := metainfo.FromProto(m.Proto())
			c.Signature = bytes.Clone(c.Signature)
			tc.f(c)
			if err := v.VerifyMetainfo(c); !errors.Is(err, ErrBadMetainfoSignature) {
				t.Errorf("metainfo with a changed %s: got %v, want ErrBadMetainfoSignature", tc.name, err)
			}
		})
	}
}

func TestMetainfoFromAnotherKeyOrUnsignedIsRefused(t *testing.T) {
	origin, forger := newTestKey(t), newTestKey(t)
	v := NewVerifier(origin.Public())

	unsigned := testMetainfo(t)
	if err := v.VerifyMetainfo(unsigned); !errors.Is(err, ErrBadMetainfoSignature) {
		t.Errorf("unsigned metainfo: got %v, want ErrBadMetainfoSignature", err)
	}

	forged := testMetainfo(t)
	if err := forger.SignMetainfo(forged); err != nil {
		t.Fatal(err)
	}
	err := v.VerifyMetainfo(forged)
	if !errors.Is(err, ErrBadMetainfoSignature) || !errors.Is(err, ErrUnknownKey) {
		t.Errorf("metainfo signed by another key: got %v, want ErrBadMetainfoSignature and ErrUnknownKey", err)
	}
	// The forger's signature under the origin's key id.
	forged.KeyID = origin.ID()
	if err := v.VerifyMetainfo(forged); !errors.Is(err, ErrBadMetainfoSignature) || errors.Is(err, ErrUnknownKey) {
		t.Errorf("metainfo signed by another key claiming the origin's id: got %v, want a bad signature", err)
	}
}

// Per-piece metainfo is signed as before schemes existed, so that agents
// that know no scheme still take it, and chained metainfo under another
// context, so that they refuse it rather than take chaining values for
// piece hashes.
func TestMetainfoSigningInputBySchemeAndVersion(t *testing.T) {
	m := testMetainfo(t)
	in, err := metainfoSigningInput(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(in, []byte(metainfoContextV2+"\x01")) {
		t.Fatalf("chained metainfo's signing input starts %q, want the v2 context and scheme 1", in[:min(len(in), 32)])
	}
	perPiece := *m
	perPiece.Scheme = metainfo.PerPiece
	old, err := metainfoSigningInput(&perPiece)
	if err != nil {
		t.Fatal(err)
	}
	// What every origin signed before schemes: context v1, then the fields.
	want := []byte(metainfoContext)
	want = append(want, byte(len(m.Digest)))
	want = append(want, m.Digest...)
	want = binary.BigEndian.AppendUint64(want, uint64(m.Size))
	want = binary.BigEndian.AppendUint64(want, uint64(m.PieceLength))
	h := sha256.New()
	for _, ph := range m.PieceHashes {
		h.Write(ph[:])
	}
	if want = h.Sum(want); !bytes.Equal(old, want) {
		t.Fatal("per-piece metainfo's signing input is not the one used before schemes")
	}
}
