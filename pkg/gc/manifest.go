package gc

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// ManifestRefs is what a manifest points at, split by how GC treats it.
type ManifestRefs struct {
	// Blobs are configs, layers and artifact blobs: kept while the manifest is.
	Blobs []digest.Digest
	// Children are the manifests of an index or manifest list: kept while
	// the index is, and protected from retention's untagged rule.
	Children []digest.Digest
	// Subject is the manifest this one refers to (a signature, an SBOM). It
	// does not keep the subject alive: registry:2 does not mark subjects
	// either, and a subject whose revision was deleted is not served.
	Subject digest.Digest
}

// manifestJSON is the union of the fields GC reads from every manifest kind
// registry:2 accepts: image manifests and indexes, OCI and Docker, artifact
// manifests (blobs) and schema1 (fsLayers).
type manifestJSON struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Config        *v1.Descriptor  `json:"config"`
	Layers        []v1.Descriptor `json:"layers"`
	Manifests     []v1.Descriptor `json:"manifests"`
	Blobs         []v1.Descriptor `json:"blobs"`
	Subject       *v1.Descriptor  `json:"subject"`
	FSLayers      []struct {
		BlobSum digest.Digest `json:"blobSum"`
	} `json:"fsLayers"`
}

// ParseManifest extracts the references of a stored manifest. Unknown media
// types are read by shape, because a registry stores what clients pushed and
// missing a reference would lose a blob, while an extra one only keeps it.
// A reference that is not a valid digest is skipped: no blob the sweep can
// see has such a name (blob paths are parsed as valid digests), so it
// protects nothing, and one odd manifest must not stop every collection.
// Only a manifest that is not JSON at all is an error.
func ParseManifest(b []byte) (ManifestRefs, error) {
	var m manifestJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return ManifestRefs{}, fmt.Errorf("decoding manifest JSON: %w", err)
	}
	var refs ManifestRefs
	add := func(to *[]digest.Digest, d digest.Digest) {
		if d.Validate() == nil {
			*to = append(*to, d)
		}
	}
	if m.Config != nil {
		add(&refs.Blobs, m.Config.Digest)
	}
	for _, l := range m.Layers {
		add(&refs.Blobs, l.Digest)
	}
	for _, l := range m.Blobs {
		add(&refs.Blobs, l.Digest)
	}
	for _, l := range m.FSLayers {
		add(&refs.Blobs, l.BlobSum)
	}
	for _, c := range m.Manifests {
		add(&refs.Children, c.Digest)
	}
	if m.Subject != nil && m.Subject.Digest.Validate() == nil {
		refs.Subject = m.Subject.Digest
	}
	return refs, nil
}
