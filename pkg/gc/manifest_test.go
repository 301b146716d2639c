package gc

import (
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestParseManifest(t *testing.T) {
	a, b, c := dg("a"), dg("b"), dg("c")
	tests := []struct {
		name     string
		body     string
		blobs    []digest.Digest
		children []digest.Digest
		subject  digest.Digest
		wantErr  bool
	}{
		{"docker schema2 image", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
			"config":{"digest":"` + a.String() + `"},"layers":[{"digest":"` + b.String() + `"},{"digest":"` + c.String() + `"}]}`,
			[]digest.Digest{a, b, c}, nil, "", false},
		{"docker manifest list", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
			"manifests":[{"digest":"` + a.String() + `","platform":{"os":"linux","architecture":"amd64"}}]}`,
			nil, []digest.Digest{a}, "", false},
		{"oci referrer with subject", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
			"config":{"digest":"` + a.String() + `"},"layers":[],"subject":{"digest":"` + c.String() + `"}}`,
			[]digest.Digest{a}, nil, c, false},
		{"oci artifact manifest blobs", `{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[{"digest":"` + b.String() + `"}]}`,
			[]digest.Digest{b}, nil, "", false},
		{"schema1 fsLayers", `{"schemaVersion":1,"fsLayers":[{"blobSum":"` + a.String() + `"}]}`,
			[]digest.Digest{a}, nil, "", false},
		{"index without media type, read by shape", `{"schemaVersion":2,"manifests":[{"digest":"` + b.String() + `"}]}`,
			nil, []digest.Digest{b}, "", false},
		{"invalid digests are skipped", `{"schemaVersion":2,"config":{},"layers":[{"digest":"sha256:nothex"},{"digest":"` + a.String() + `"}],"subject":{}}`,
			[]digest.Digest{a}, nil, "", false},
		{"not json", `<html>`, nil, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refs, err := ParseManifest([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !slices.Equal(refs.Blobs, tt.blobs) || !slices.Equal(refs.Children, tt.children) || refs.Subject != tt.subject {
				t.Errorf("got %+v, want blobs %v children %v subject %q", refs, tt.blobs, tt.children, tt.subject)
			}
		})
	}
}

func TestClassifyRepoPath(t *testing.T) {
	d := dg("x")
	tests := []struct {
		path string
		want repoFile
	}{
		{layerLinkPath("a/b/c", d), repoFile{kind: linkLayer, repo: "a/b/c", digest: d}},
		{revisionLinkPath("a", d), repoFile{kind: linkRevision, repo: "a", digest: d}},
		{tagCurrentLinkPath("team/app", "v1.0"), repoFile{kind: linkTagCurrent, repo: "team/app", tag: "v1.0"}},
		{uploadDir("x/y", "0a1b") + "/startedat", repoFile{kind: uploadStartedAt, repo: "x/y", upload: "0a1b"}},
		{tagDir("r", "t") + "/index/sha256/" + d.Encoded() + "/link", repoFile{}},
		{uploadDir("x", "id") + "/data", repoFile{}},
		{repositoriesRoot + "/_layers/sha256/" + d.Encoded() + "/link", repoFile{}},
		{repositoriesRoot + "/r/_layers/sha256/nothex/link", repoFile{}},
	}
	for _, tt := range tests {
		if got := classifyRepoPath(tt.path); got != tt.want {
			t.Errorf("classifyRepoPath(%s) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
	if got, ok := blobFromDataPath(blobDataPath(d)); !ok || got != d {
		t.Errorf("blobFromDataPath(blobDataPath(d)) = %s, %v", got, ok)
	}
	if _, ok := blobFromDataPath(blobsRoot + "/sha256/zz/" + d.Encoded() + "/data"); ok {
		t.Errorf("a blob path whose prefix directory does not match must be rejected")
	}
}

// FuzzParseManifest: whatever a client stored, parsing does not panic, and
// every reference it returns is a valid digest (marking relies on both).
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(imageManifest(dg("c"), dg("l1"), dg("l2"))))
	f.Add([]byte(indexManifest(dg("a"), dg("b"))))
	f.Add([]byte(referrerManifest(dg("s"), dg("c"))))
	f.Add([]byte(`{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:00"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		refs, err := ParseManifest(b)
		if err != nil {
			return
		}
		for _, d := range append(append([]digest.Digest{}, refs.Blobs...), refs.Children...) {
			if d.Validate() != nil {
				t.Fatalf("invalid digest %q returned from %q", d, b)
			}
		}
		if refs.Subject != "" && refs.Subject.Validate() != nil {
			t.Fatalf("invalid subject %q returned from %q", refs.Subject, b)
		}
	})
}
