package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
)

// layer is the blob every host pulls.
type layer struct {
	repo   string
	digest string
	size   int64
}

// randomLayer streams size bytes of a ChaCha8 stream: the same seed gives
// the same bytes, so the layer is hashed once and uploaded from a second
// pass without ever being held in memory.
func randomLayer(seed uint64, size int64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return io.LimitReader(rand.NewChaCha8(key), size)
}

// pushImage uploads a random layer of size bytes, a config and an OCI
// image manifest referencing both (tag "bench") to the origin's registry
// API at base.
func pushImage(ctx context.Context, base, repo string, size int64) (layer, error) {
	seed := rand.Uint64()
	h := sha256.New()
	if _, err := io.Copy(h, randomLayer(seed, size)); err != nil {
		return layer{}, fmt.Errorf("hashing the layer: %w", err)
	}
	l := layer{repo: repo, digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), size: size}
	if err := pushBlob(ctx, base, repo, l.digest, size, randomLayer(seed, size)); err != nil {
		return layer{}, fmt.Errorf("pushing the layer: %w", err)
	}
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + l.digest + `"]}}`)
	configDigest := fmt.Sprintf("sha256:%x", sha256.Sum256(config))
	if err := pushBlob(ctx, base, repo, configDigest, int64(len(config)), bytes.NewReader(config)); err != nil {
		return layer{}, fmt.Errorf("pushing the image config: %w", err)
	}
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	manifest, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}{
		SchemaVersion: 2,
		MediaType:     "application/vnd.oci.image.manifest.v1+json",
		Config:        descriptor{"application/vnd.oci.image.config.v1+json", configDigest, int64(len(config))},
		Layers:        []descriptor{{"application/vnd.oci.image.layer.v1.tar+gzip", l.digest, size}},
	})
	if err != nil {
		return layer{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/bench", bytes.NewReader(manifest))
	if err != nil {
		return layer{}, err
	}
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	if err := expect(http.DefaultClient.Do(req))(http.StatusCreated); err != nil {
		return layer{}, fmt.Errorf("pushing the manifest: %w", err)
	}
	return l, nil
}

// pushBlob is a monolithic upload: POST, then PUT ?digest= with the body.
func pushBlob(ctx context.Context, base, repo, digest string, size int64, body io.Reader) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err := expect(resp, err)(http.StatusAccepted); err != nil {
		return fmt.Errorf("starting an upload: %w", err)
	}
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("upload location: %w", err)
	}
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, (&url.URL{Scheme: loc.Scheme, Host: loc.Host, Path: loc.Path, RawQuery: loc.RawQuery}).String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	if err := expect(http.DefaultClient.Do(req))(http.StatusCreated); err != nil {
		return fmt.Errorf("uploading %s: %w", digest, err)
	}
	return nil
}

// expect closes the response and returns an error unless it has status
// want.
func expect(resp *http.Response, err error) func(want int) error {
	return func(want int) error {
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != want {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return fmt.Errorf("%s %s: %s: %s", resp.Request.Method, resp.Request.URL.Path, resp.Status, b)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
}
