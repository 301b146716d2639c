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
func ParseManifest(b []byte) (ManifestRefs, error) {
	var m manifestJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return ManifestRefs{}, fmt.Errorf("decoding manifest JSON: %w", err)
	}
	var refs ManifestRefs
	add := func(ds ...v1.Descriptor) error {
		for _, d := range ds {
			if err := d.Digest.Validate(); err != nil {
				return fmt.Errorf("manifest references invalid digest %q: %w", d.Digest, err)
			}
			refs.Blobs = append(refs.Blobs, d.Digest)
		}
		return nil
	}
	if m.Config != nil {
		if err := add(*m.Config); err != nil {
			return ManifestRefs{}, err
		}
	}
	if err := add(m.Layers...); err != nil {
		return ManifestRefs{}, err
	}
	if err := add(m.Blobs...); err != nil {
		return ManifestRefs{}, err
	}
	for _, d := range m.Manifests {
		if err := d.Digest.Validate(); err != nil {
			return ManifestRefs{}, fmt.Errorf("index references invalid digest %q: %w", d.Digest, err)
		}
		refs.Children = append(refs.Children, d.Digest)
	}
	for _, l := range m.FSLayers {
		if err := l.BlobSum.Validate(); err != nil {
			return ManifestRefs{}, fmt.Errorf("schema1 manifest references invalid digest %q: %w", l.BlobSum, err)
		}
		refs.Blobs = append(refs.Blobs, l.BlobSum)
	}
	if m.Subject != nil {
		if err := m.Subject.Digest.Validate(); err != nil {
			return ManifestRefs{}, fmt.Errorf("manifest subject has invalid digest %q: %w", m.Subject.Digest, err)
		}
		refs.Subject = m.Subject.Digest
	}
	return refs, nil
}
