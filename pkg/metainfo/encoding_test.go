package metainfo

import (
	"bytes"
	"encoding/json"
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
	for _, m := range []*Metainfo{sample(t, 0, 16), sample(t, 1, 16), sample(t, 100, 16), sample(t, 4096, 4096)} {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary: %v", err)
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
	m := sample(t, 100, 32)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	if fields["version"] != float64(Version) || fields["pieceLength"] != float64(32) || fields["digest"] != string(m.Digest) {
		t.Fatalf("JSON form lacks version, pieceLength or digest: %s", b)
	}
	var got Metainfo
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("json.Unmarshal: %v", err)
	}
	if !reflect.DeepEqual(&got, m) {
		t.Fatalf("JSON round trip changed metainfo:\n got %+v\nwant %+v", got, *m)
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
	m := sample(t, 100, 16)
	got, err := FromProto(m.Proto())
	if err != nil {
		t.Fatalf("FromProto: %v", err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("proto round trip changed metainfo:\n got %+v\nwant %+v", *got, *m)
	}
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
