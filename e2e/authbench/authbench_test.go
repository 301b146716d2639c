package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"
	"time"
)

func TestStormScheduleSpreadsBurstsInsideTheSpan(t *testing.T) {
	at := stormSchedule(1000, 32, 30*time.Second)
	if len(at) != 32 {
		t.Fatalf("1000 requests 32 at a time: %d bursts, want 32 (the last one of 8)", len(at))
	}
	if at[0] != 0 {
		t.Errorf("first burst at %s, want at once", at[0])
	}
	for i := 1; i < len(at); i++ {
		if at[i] <= at[i-1] {
			t.Fatalf("burst %d at %s, not after burst %d at %s", i, at[i], i-1, at[i-1])
		}
	}
	if last := at[len(at)-1]; last >= 30*time.Second {
		t.Errorf("last burst at %s, want before the 30s span ends", last)
	}
	if got := len(stormSchedule(1000, 1, time.Second)); got != 1000 {
		t.Errorf("one at a time: %d bursts, want one per request", got)
	}
}

func TestWindowsSpanned(t *testing.T) {
	for _, tt := range []struct {
		d, ttl time.Duration
		want   int
	}{
		{time.Millisecond, 10 * time.Second, 1},
		{10 * time.Second, 10 * time.Second, 1},
		{28500 * time.Millisecond, 10 * time.Second, 3},
		{30001 * time.Millisecond, 10 * time.Second, 4},
	} {
		if got := windowsSpanned(tt.d, tt.ttl); got != tt.want {
			t.Errorf("a storm of %s with authTTL %s touches %d windows, want %d", tt.d, tt.ttl, got, tt.want)
		}
	}
}

func TestQuantileIsNearestRank(t *testing.T) {
	var v []time.Duration
	for i := 1; i <= 100; i++ {
		v = append(v, time.Duration(i))
	}
	if got := quantile(v, 0.5); got != 50 {
		t.Errorf("p50 of 1..100 = %d, want 50", got)
	}
	if got := quantile(v, 0.99); got != 99 {
		t.Errorf("p99 of 1..100 = %d, want 99", got)
	}
	if got := quantile(nil, 0.5); got != 0 {
		t.Errorf("p50 of nothing = %d, want 0", got)
	}
}

func TestMarkdownTable(t *testing.T) {
	tb := &table{title: "T", header: []string{"a", "b"}}
	tb.add("1", "PASS")
	tb.note("n %d", 1)
	var b bytes.Buffer
	if err := tb.write(&b, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| a | b |\n|---|---|\n| 1 | PASS |\n", "- n 1\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestStreamLayerIsItsDigest(t *testing.T) {
	l, err := newStreamLayer(3, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 100_000 || bytesDigest(b) != l.digest.String() {
		t.Errorf("layer content: %d bytes with digest %s, want 100000 with %s", len(b), bytesDigest(b), l.digest)
	}
}

func bytesDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
