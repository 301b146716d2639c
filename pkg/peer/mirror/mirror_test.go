package mirror

import (
	"errors"
	"net/http"
	"testing"
)

func TestParseRange(t *testing.T) {
	const size = 100
	for _, c := range []struct {
		header        string
		first, last   int64
		partial, fail bool
	}{
		{"", 0, 99, false, false},
		{"bytes=0-", 0, 99, true, false},
		{"bytes=10-19", 10, 19, true, false},
		{"bytes=90-200", 90, 99, true, false}, // clipped to the end
		{"bytes=-10", 90, 99, true, false},
		{"bytes=-200", 0, 99, true, false},
		{"bytes=100-", 0, 0, false, true}, // starts past the end
		{"bytes=20-10", 0, 0, false, true},
		{"bytes=-0", 0, 0, false, true},
		{"bytes=x-", 0, 0, false, true},
		{"bytes=0-1,5-6", 0, 99, false, false}, // several ranges: served whole
		{"items=0-1", 0, 99, false, false},     // not bytes: ignored
	} {
		first, last, partial, err := parseRange(c.header, size)
		if c.fail {
			if !errors.Is(err, errRangeUnsatisfiable) {
				t.Errorf("parseRange(%q): err %v, want unsatisfiable", c.header, err)
			}
			continue
		}
		if err != nil || first != c.first || last != c.last || partial != c.partial {
			t.Errorf("parseRange(%q) = %d, %d, %v, %v; want %d, %d, %v", c.header, first, last, partial, err, c.first, c.last, c.partial)
		}
	}
}

func TestNewRejectsBadOrigins(t *testing.T) {
	for _, o := range []string{"", "registry.example.com", "ftp://x", "http://"} {
		cfg := DefaultConfig()
		cfg.Origin = o
		if _, err := New(cfg, Options{}); err == nil {
			t.Errorf("origin %q accepted", o)
		}
	}
}

func TestManifestAcceptIgnoresOrderSplittingAndUnknownTypes(t *testing.T) {
	a := http.Header{}
	a.Add("Accept", "application/vnd.oci.image.index.v1+json")
	a.Add("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	b := http.Header{}
	b.Add("Accept", "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json;q=0.9, */*")
	b.Add("Accept", "Application/VND.docker.distribution.manifest.v2+json")
	b.Add("Accept", "application/vnd.oci.image.index.v1+json, application/x-junk-1234")
	if ka, kb := manifestAccept(a), manifestAccept(b); ka != kb {
		t.Errorf("the same manifest types give keys %q and %q", ka, kb)
	}
	want := "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
	if got := manifestAccept(a); got != want {
		t.Errorf("manifestAccept = %q, want %q", got, want)
	}
	c := http.Header{}
	c.Add("Accept", "application/vnd.oci.image.manifest.v1+json")
	if manifestAccept(a) == manifestAccept(c) {
		t.Error("different Accept types give the same key")
	}
	junk := http.Header{}
	junk.Add("Accept", "text/html, application/json, */*")
	if got := manifestAccept(junk); got != "" {
		t.Errorf("no manifest type gives %q, want \"\"", got)
	}
}
