package metainfo

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func sample(t *testing.T, size int, pieceLength int64) *Metainfo {
	t.Helper()
	data := blob(size)
	m, err := Compute(bytes.NewReader(data), digest.FromBytes(data), int64(size), pieceLength)
	if err != nil {
		t.Fatalf("Compute: %v", err)
	}
	return m
}

func TestBinaryRoundTrip(t *testing.T) {
	for _, m := range []*Metainfo{sample(t, 0, 16), sample(t, 1, 16), sample(t, 100, 16), sample(t, 4096, 4096),
		sample(t, 0, 64), sample(t, 1000, 64)} {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary: %v", err)
		}
		if want := map[Scheme]byte{PerPiece: 1, Chained: 2}[m.Scheme]; b[4] != want {
			t.Fatalf("%s metainfo written as version %d, want %d", m.Scheme, b[4], want)
		}
		var got Metainfo
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("UnmarshalBinary: %v", err)
		}
		if !reflect.DeepEqual(&got, m) && !(m.NumPieces() == 0 && got.NumPieces() == 0 && got.Digest == m.Digest) {
			t.Fatalf("round trip changed metainfo:\n got %+v\nwant %+v", got, *m)
		}
	}
}

func TestUnmarshalBinaryRejects(t *testing.T) {
	good, err := sample(t, 100, 16).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	dl := int(good[5])
	tests := []struct {
		name    string
		b       []byte
		wantErr string
	}{
		{"empty", nil, "bad magic"},
		{"wrong magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), "bad magic"},
		{"future version", mutate(func(b []byte) []byte { b[4] = Version + 1; return b }), "unsupported version"},
		{"truncated header", good[:10], "truncated"},
		{"missing a hash byte", good[:len(good)-1], "bytes of piece hashes"},
		{"trailing byte", append(append([]byte(nil), good...), 0), "bytes of piece hashes"},
		{"piece length not power of two", mutate(func(b []byte) []byte { b[6+dl+15] = 17; return b }), "power of two"},
		{"size disagrees with piece count", mutate(func(b []byte) []byte { b[6+dl+7] = 200; return b }), "piece hashes, want"},
		{"bad digest", mutate(func(b []byte) []byte { b[6+dl-1] = 'z'; return b }), "invalid metainfo digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Metainfo
			err := m.UnmarshalBinary(tt.b)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("UnmarshalBinary error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		m       *Metainfo
		version float64
		scheme  any
	}{{sample(t, 100, 32), 1, nil}, {sample(t, 1000, 64), 2, "chained"}} {
		m := tc.m
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		var fields map[string]any
		if err := json.Unmarshal(b, &fields); err != nil {
			t.Fatal(err)
		}
		if fields["version"] != tc.version || fields["scheme"] != tc.scheme || fields["pieceLength"] != float64(m.PieceLength) || fields["digest"] != string(m.Digest) {
			t.Fatalf("JSON form lacks version %v, scheme %v, pieceLength or digest: %s", tc.version, tc.scheme, b)
		}
		var got Metainfo
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("json.Unmarshal: %v", err)
		}
		if !reflect.DeepEqual(&got, m) {
			t.Fatalf("JSON round trip changed metainfo:\n got %+v\nwant %+v", got, *m)
		}
	}
}

func TestUnmarshalJSONRejects(t *testing.T) {
	d := digest.FromString("x")
	h := strings.Repeat("ab", 32)
	tests := []struct {
		name, in, wantErr string
	}{
		{"no version", `{"digest":"` + string(d) + `","size":1,"pieceLength":16,"pieceHashes":["` + h + `"]}`, "unsupported version 0"},
		{"short hash", `{"version":1,"digest":"` + string(d) + `","size":1,"pieceLength":16,"pieceHashes":["abcd"]}`, "not 32 hex bytes"},
		{"non-hex hash", `{"version":1,"digest":"` + string(d) + `","size":1,"pieceLength":16,"pieceHashes":["` + strings.Repeat("zz", 32) + `"]}`, "hash"},
		{"missing hash", `{"version":1,"digest":"` + string(d) + `","size":20,"pieceLength":16,"pieceHashes":["` + h + `"]}`, "want 2"},
		{"wrong type", `{"version":"1"}`, "decoding metainfo JSON"},
		{"scheme in version 1", `{"version":1,"scheme":"chained","digest":"` + string(d) + `","size":1,"pieceLength":64,"pieceHashes":["` + h + `"]}`, "unknown scheme"},
		{"unknown scheme", `{"version":2,"scheme":"merkle","digest":"` + string(d) + `","size":1,"pieceLength":64,"pieceHashes":["` + h + `"]}`, "unknown scheme"},
		{"chain not ending in the digest", `{"version":2,"scheme":"chained","digest":"` + string(d) + `","size":1,"pieceLength":64,"pieceHashes":["` + h + `"]}`, "not the digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Metainfo
			err := json.Unmarshal([]byte(tt.in), &m)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Unmarshal error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestProtoRoundTrip(t *testing.T) {
	for _, m := range []*Metainfo{sample(t, 100, 16), sample(t, 1000, 64)} {
		got, err := FromProto(m.Proto())
		if err != nil {
			t.Fatalf("FromProto: %v", err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("proto round trip changed metainfo:\n got %+v\nwant %+v", *got, *m)
		}
	}
	c := sample(t, 1000, 64).Proto()
	c.Scheme = 7
	if _, err := FromProto(c); err == nil {
		t.Fatal("FromProto accepted an unknown scheme")
	}
	// Chained hashes passed off as per-piece ones (the scheme dropped
	// on the way; the signature covers it too) verify no piece.
	c = sample(t, 1000, 64).Proto()
	c.Scheme = 0
	if m, err := FromProto(c); err == nil && m.Verify(0, blob(1000)[:64]) == nil {
		t.Fatal("chained hashes taken for per-piece ones verified a piece")
	}
	m := sample(t, 100, 16)
	p := m.Proto()
	p.PieceHashes = p.PieceHashes[:len(p.PieceHashes)-1]
	if _, err := FromProto(p); err == nil {
		t.Fatal("FromProto accepted piece hashes that are not a multiple of 32 bytes")
	}
	p = m.Proto()
	p.PieceLength = 48
	if _, err := FromProto(p); err == nil {
		t.Fatal("FromProto accepted a piece length that is not a power of two")
	}
}

// Metainfo stored before schemes existed (version 1, no scheme: every
// origin's until chained hashes) decodes as PerPiece, verifies its pieces
// with their own SHA-256 even where new metainfo would be chained, and is
// written back byte for byte.
func TestVersion1DecodesAsPerPiece(t *testing.T) {
	data := blob(300)
	d := digest.FromBytes(data)
	old := []byte("SHMI\x01")
	old = append(old, byte(len(d)))
	old = append(old, d...)
	old = binary.BigEndian.AppendUint64(old, 300)
	old = binary.BigEndian.AppendUint64(old, 128)
	old = binary.BigEndian.AppendUint32(old, 3)
	for off := 0; off < 300; off += 128 {
		sum := sha256.Sum256(data[off:min(off+128, 300)])
		old = append(old, sum[:]...)
	}
	var m Metainfo
	if err := m.UnmarshalBinary(old); err != nil {
		t.Fatalf("decoding a version 1 metainfo: %v", err)
	}
	if m.Scheme != PerPiece || m.NumPieces() != 3 {
		t.Fatalf("version 1 decoded as %s with %d pieces, want per-piece with 3", m.Scheme, m.NumPieces())
	}
	for i := range 3 {
		if err := m.Verify(i, data[m.PieceOffset(i):m.PieceOffset(i)+m.PieceSize(i)]); err != nil {
			t.Fatalf("piece %d of a version 1 metainfo: %v", i, err)
		}
	}
	if err := m.Verify(1, data[:128]); !errors.Is(err, ErrCorruptPiece) {
		t.Fatalf("piece 0's bytes as piece 1: %v", err)
	}
	if b, err := m.MarshalBinary(); err != nil || !bytes.Equal(b, old) {
		t.Fatalf("a per-piece metainfo is not written back as version 1 (%v)", err)
	}
	var j Metainfo
	if err := json.Unmarshal([]byte(`{"version":1,"digest":"`+string(d)+`","size":300,"pieceLength":128,"pieceHashes":["`+
		hex.EncodeToString(m.PieceHashes[0][:])+`","`+hex.EncodeToString(m.PieceHashes[1][:])+`","`+hex.EncodeToString(m.PieceHashes[2][:])+`"]}`), &j); err != nil {
		t.Fatalf("decoding version 1 JSON: %v", err)
	}
	if !reflect.DeepEqual(&j, &m) {
		t.Fatalf("version 1 JSON decoded as %+v, want %+v", j, m)
	}
}
