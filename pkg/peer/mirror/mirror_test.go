package mirror

import (
	"net/http"
	"testing"
)

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
