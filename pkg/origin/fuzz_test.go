package origin

import "testing"

// The fuzz targets feed the parsers what a hostile client can send. Each
// checks that the parser never panics and that what it accepts is sane.
// Seed corpora live in testdata/fuzz. Routes, paths and ranges are parsed
// by internal/ociapi, whose fuzz targets cover them.

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}`), mediaTypeOCIManifest)
	f.Add([]byte(`{"schemaVersion":2,"manifests":[]}`), "")
	f.Add([]byte(`{"schemaVersion":1}`), mediaTypeDockerSchema1JWS)
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		m, mt, err := parseManifest(body, contentType)
		if err != nil {
			if !isAPIError(err) {
				t.Fatalf("rejection is not an API error: %v", err)
			}
			return
		}
		if !isImageType(mt) && !isIndexType(mt) {
			t.Fatalf("accepted media type %q", mt)
		}
		if isImageType(mt) && m.Config == nil {
			t.Fatal("accepted an image manifest without config")
		}
	})
}
