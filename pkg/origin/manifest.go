package origin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// Manifest media types the origin stores and serves.
const (
	mediaTypeOCIManifest        = ocispec.MediaTypeImageManifest
	mediaTypeOCIIndex           = ocispec.MediaTypeImageIndex
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerSchema1      = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeDockerSchema1JWS   = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

func isIndexType(mt string) bool { return mt == mediaTypeOCIIndex || mt == mediaTypeDockerManifestList }

func isImageType(mt string) bool { return mt == mediaTypeOCIManifest || mt == mediaTypeDockerManifest }

// manifest is the part of any manifest the origin needs to validate it,
// track its references and answer the referrers API.
type manifest struct {
	SchemaVersion *int                 `json:"schemaVersion"`
	MediaType     string               `json:"mediaType,omitempty"`
	ArtifactType  string               `json:"artifactType,omitempty"`
	Config        *ocispec.Descriptor  `json:"config,omitempty"`
	Layers        []ocispec.Descriptor `json:"layers,omitempty"`
	Manifests     []ocispec.Descriptor `json:"manifests,omitempty"`
	Subject       *ocispec.Descriptor  `json:"subject,omitempty"`
	Annotations   map[string]string    `json:"annotations,omitempty"`
}

// detectMediaType says what a stored manifest is: its mediaType field, or
// for OCI content that omits it, its shape.
func detectMediaType(m *manifest) string {
	if m.MediaType != "" {
		return m.MediaType
	}
	if m.Manifests != nil && m.Config == nil {
		return mediaTypeOCIIndex
	}
	return mediaTypeOCIManifest
}

func manifestInvalid(format string, args ...any) *ociapi.Error {
	return &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodeManifestInvalid, Message: fmt.Sprintf(format, args...)}
}

// parseManifest decodes and checks a manifest body against the media type
// the client declared (empty when it declared none). It returns the parsed
// manifest and the media type to store it under.
func parseManifest(body []byte, contentType string) (*manifest, string, error) {
	if ct, _, ok := strings.Cut(contentType, ";"); ok {
		contentType = ct
	}
	contentType = strings.TrimSpace(contentType)
	var m manifest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil {
		return nil, "", &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodeManifestInvalid,
			Message: "manifest is not valid JSON: " + err.Error(), Cause: err}
	}
	if dec.More() {
		return nil, "", manifestInvalid("manifest has data after its JSON object")
	}
	if contentType == mediaTypeDockerSchema1 || contentType == mediaTypeDockerSchema1JWS ||
		(m.SchemaVersion != nil && *m.SchemaVersion == 1) {
		return nil, "", manifestInvalid("Docker schema 1 manifests are not supported; push with a client that writes schema 2 or OCI manifests")
	}
	if m.SchemaVersion == nil || *m.SchemaVersion != 2 {
		return nil, "", manifestInvalid("manifest must have schemaVersion 2")
	}
	mt := detectMediaType(&m)
	if !isImageType(mt) && !isIndexType(mt) {
		return nil, "", manifestInvalid("unsupported manifest media type %s: use an OCI or Docker schema 2 image manifest or index", ociapi.Quote(mt))
	}
	if contentType != "" && (isImageType(contentType) || isIndexType(contentType)) && contentType != mt {
		return nil, "", manifestInvalid("Content-Type %s does not match the manifest's media type %s", ociapi.Quote(contentType), ociapi.Quote(mt))
	}
	if isImageType(mt) {
		if m.Config == nil {
			return nil, "", manifestInvalid("image manifest has no config descriptor")
		}
		if m.Manifests != nil {
			return nil, "", manifestInvalid("image manifest must not have a manifests list")
		}
		if err := checkDescriptor("config", *m.Config); err != nil {
			return nil, "", err
		}
		for i, l := range m.Layers {
			if err := checkDescriptor(fmt.Sprintf("layers[%d]", i), l); err != nil {
				return nil, "", err
			}
		}
	} else {
		if m.Config != nil || m.Layers != nil {
			return nil, "", manifestInvalid("index must not have config or layers")
		}
		for i, c := range m.Manifests {
			if err := checkDescriptor(fmt.Sprintf("manifests[%d]", i), c); err != nil {
				return nil, "", err
			}
		}
	}
	if m.Subject != nil {
		if err := checkDescriptor("subject", *m.Subject); err != nil {
			return nil, "", err
		}
	}
	return &m, mt, nil
}

func checkDescriptor(where string, d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return manifestInvalid("%s: invalid digest %s: %v", where, ociapi.Quote(string(d.Digest)), err)
	}
	if d.Size < 0 {
		return manifestInvalid("%s: negative size", where)
	}
	if d.MediaType == "" {
		return manifestInvalid("%s: descriptor has no mediaType", where)
	}
	if d.Data != nil {
		if int64(len(d.Data)) != d.Size {
			return manifestInvalid("%s: data field has %d bytes, size says %d", where, len(d.Data), d.Size)
		}
		if d.Digest.Algorithm().FromBytes(d.Data) != d.Digest {
			return manifestInvalid("%s: data field does not match its digest", where)
		}
	}
	return nil
}

// foreign tells a layer that lives outside the registry and need not be
// pushed: nondistributable OCI layers, Docker foreign layers, and anything
// with URLs.
func foreign(d ocispec.Descriptor) bool {
	return len(d.URLs) > 0 || strings.Contains(d.MediaType, "nondistributable") || strings.Contains(d.MediaType, "foreign")
}

// referrerDescriptor is what the referrers API lists for a manifest.
func referrerDescriptor(m *manifest, mt string, d digest.Digest, size int64) ocispec.Descriptor {
	at := m.ArtifactType
	if at == "" && m.Config != nil {
		at = m.Config.MediaType
	}
	return ocispec.Descriptor{MediaType: mt, ArtifactType: at, Digest: d, Size: size, Annotations: m.Annotations}
}
