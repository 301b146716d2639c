package metainfo

import (
	"bytes"
	"testing"
)

func TestBitfieldWireOrder(t *testing.T) {
	b := NewBitfield(10)
	b.Set(0)
	b.Set(7)
	b.Set(9)
	if want := []byte{0x81, 0x40}; !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("bits 0,7,9 of 10 encode as %08b, want %08b (MSB first)", b.Bytes(), want)
	}
	if b.Count() != 3 || b.Complete() {
		t.Fatalf("Count = %d, Complete = %v; want 3, false", b.Count(), b.Complete())
	}
	for i, want := range []bool{true, false, false, false, false, false, false, true, false, true} {
		if b.Has(i) != want {
			t.Errorf("Has(%d) = %v, want %v", i, b.Has(i), want)
		}
	}
	if b.Has(10) || b.Has(-1) {
		t.Error("Has reports pieces out of range")
	}
	b.Clear(0)
	if b.Has(0) || b.Count() != 2 {
		t.Errorf("after Clear(0): Has(0) = %v, Count = %d", b.Has(0), b.Count())
	}
	b.SetAll()
	if !b.Complete() || !bytes.Equal(b.Bytes(), []byte{0xff, 0xc0}) {
		t.Errorf("SetAll gives %08b, Complete = %v; want spare bits clear", b.Bytes(), b.Complete())
	}
}

func TestParseBitfield(t *testing.T) {
	tests := []struct {
		name  string
		b     []byte
		n     int
		valid bool
	}{
		{"empty for zero pieces", nil, 0, true},
		{"exact byte", []byte{0xff}, 8, true},
		{"spare bits clear", []byte{0xff, 0xc0}, 10, true},
		{"spare bit set", []byte{0xff, 0xe0}, 10, false},
		{"too short", []byte{0xff}, 10, false},
		{"too long", []byte{0xff, 0, 0}, 10, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBitfield(tt.b, tt.n)
			if (err == nil) != tt.valid {
				t.Fatalf("ParseBitfield(%08b, %d) error = %v, want valid = %v", tt.b, tt.n, err, tt.valid)
			}
			if err == nil && (got.Len() != tt.n || !bytes.Equal(got.Bytes(), tt.b) && len(tt.b) != 0) {
				t.Fatalf("ParseBitfield(%08b, %d) = %08b over %d pieces", tt.b, tt.n, got.Bytes(), got.Len())
			}
		})
	}
}
