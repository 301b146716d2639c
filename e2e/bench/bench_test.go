package main

import (
	"bytes"
	"io"
	"math"
	"strings"
	"testing"
)

func TestVerdict(t *testing.T) {
	tests := []struct {
		name string
		r    row
		want string
	}{
		{"ratio reached", row{shoal: 200, ref: 100, target: target{targetRatioAtLst, 2}}, "PASS"},
		{"ratio missed", row{shoal: 199, ref: 100, target: target{targetRatioAtLst, 2}}, "MISS"},
		{"below ceiling", row{shoal: 150, ref: 400, target: target{targetBelow, 200}}, "PASS"},
		{"at ceiling", row{shoal: 200, ref: 100, target: target{targetBelow, 200}}, "MISS"},
		{"informational", row{shoal: 1, ref: 2}, "-"},
		{"failed", row{err: io.ErrUnexpectedEOF, target: target{targetRatioAtLst, 1}}, "ERROR"},
	}
	for _, tt := range tests {
		if got := tt.r.verdict(); got != tt.want {
			t.Errorf("%s: verdict = %s, want %s", tt.name, got, tt.want)
		}
	}
	if r := (row{shoal: 1}); !math.IsNaN(r.ratio()) {
		t.Errorf("ratio against a zero reference = %v, want NaN", r.ratio())
	}
}

// A round's ratio compares the servers under that round's load: a round
// where the machine was busy slows both, and the row's ratio is the
// median of the rounds' ratios, not the ratio of the medians.
func TestRatioIsTheMedianOfTheRounds(t *testing.T) {
	r := row{shoal: 100, ref: 80, rounds: []float64{0.97, 1.02, 0.99}, target: target{targetRatioAtLst, 0.95}}
	if got := r.ratio(); got != 0.99 {
		t.Errorf("ratio = %v, want 0.99, the median of the rounds' ratios (not %v, the medians')", got, 100.0/80)
	}
	if got := r.verdict(); got != "PASS" {
		t.Errorf("verdict = %s, want PASS", got)
	}
	var out bytes.Buffer
	if err := writeTable(&out, []row{r}, "Shoal", "Shoal, limits off", false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "0.97 1.02 0.99") {
		t.Errorf("the table does not list the rounds' ratios in order:\n%s", out.String())
	}
}

func TestMedian(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median of 3 values = %v, want 2", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("median of 4 values = %v, want 2.5", got)
	}
}

func TestBlobSourceIsDeterministicAndSeedDependent(t *testing.T) {
	read := func(seed uint64) []byte {
		b, err := io.ReadAll(blobSource(seed, 100_000))
		if err != nil {
			t.Fatalf("reading blob %d: %v", seed, err)
		}
		return b
	}
	a, again, other := read(7), read(7), read(8)
	if len(a) != 100_000 {
		t.Fatalf("blob size %d, want 100000", len(a))
	}
	if !bytes.Equal(a, again) {
		t.Error("the same seed gave different bytes: both servers would not get the same blob")
	}
	if bytes.Equal(a, other) {
		t.Error("different seeds gave the same bytes: repeated pushes would not be distinct blobs")
	}
	d1, err := blobDigest(7, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	if d2 := bytesDigest(a); d1 != d2 {
		t.Errorf("streamed digest %s differs from digest of the bytes %s", d1, d2)
	}
}

func TestMarkdownTableHasOneLinePerFigure(t *testing.T) {
	var b bytes.Buffer
	rows := []row{
		{figure: "manifest GET", unit: "req/s", shoal: 2000, ref: 1000, target: target{targetRatioAtLst, 2}},
		{figure: "push", unit: "MiB/s", err: io.ErrUnexpectedEOF},
	}
	if err := writeTable(&b, rows, "Shoal", "registry:2", true); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"| manifest GET (req/s) | 2000 | 1000 | 2.00x | ratio >= 2x | PASS |", "| push (MiB/s) | - | - | - | - | ERROR |", "ERROR push: unexpected EOF"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
