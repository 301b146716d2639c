package ociapi

import "testing"

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		h             string
		size          int64
		start, length int64
		partial, fail bool
	}{
		{"", 100, 0, 0, false, false},
		{"bytes=0-0", 10, 0, 1, true, false},
		{"bytes=0-", 100, 0, 100, true, false},
		{"bytes=10-19", 100, 10, 10, true, false},
		{"bytes=2-", 10, 2, 8, true, false},
		{"bytes=5-100", 10, 5, 5, true, false}, // cut to the end
		{"bytes=-3", 10, 7, 3, true, false},
		{"bytes=-200", 100, 0, 100, true, false}, // the whole of it
		{"bytes= 1-2", 10, 1, 2, true, false},
		{"bytes=10-", 10, 0, 0, false, true}, // starts at the end
		{"bytes=0-", 0, 0, 0, false, true},
		{"bytes=-1", 0, 0, 0, false, true},
		{"bytes=5-2", 10, 0, 0, false, true},
		{"bytes=-0", 10, 0, 0, false, true},
		{"bytes=x-", 10, 0, 0, false, true},
		{"bytes=+1-2", 10, 0, 0, false, true},
		{"bytes=1--2", 10, 0, 0, false, true},
		{"bytes=5", 10, 0, 0, false, true},
		{"bytes=99999999999999999999-", 10, 0, 0, false, true},
		// Ignored, as RFC 9110 lets a server: the whole blob is sent.
		{"bytes=0-1,3-4", 10, 0, 0, false, false},
		{"items=0-1", 10, 0, 0, false, false},
	} {
		br, partial, err := ParseRange(c.h, c.size)
		switch {
		case c.fail && err == nil:
			t.Errorf("ParseRange(%q, %d) = %+v, %v; want an error", c.h, c.size, br, partial)
		case !c.fail && (err != nil || partial != c.partial || br != (ByteRange{c.start, c.length})):
			t.Errorf("ParseRange(%q, %d) = %+v, %v, %v; want %d+%d partial=%v", c.h, c.size, br, partial, err, c.start, c.length, c.partial)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for _, c := range []struct {
		h          string
		start, end int64
		fail       bool
	}{
		{"0-99", 0, 99, false},
		{"bytes 0-99/100", 0, 99, false},
		{"bytes=5-9", 5, 9, false},
		{"100-199/*", 100, 199, false},
		{"9-5", 0, 0, true},
		{"-5", 0, 0, true},
		{"5", 0, 0, true},
		{"0-+5", 0, 0, true},
	} {
		start, end, err := ParseContentRange(c.h)
		if (err != nil) != c.fail || (!c.fail && (start != c.start || end != c.end)) {
			t.Errorf("ParseContentRange(%q) = %d, %d, %v; want %d, %d, error %v", c.h, start, end, err, c.start, c.end, c.fail)
		}
	}
}
