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
	"strconv"
	"time"
)

const ociManifestType = "application/vnd.oci.image.manifest.v1+json"

// manifestAccept is what dockerd sends when pulling, so servers negotiate as they would in use.
const manifestAccept = "application/vnd.docker.distribution.manifest.v2+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, " +
	"application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"

// newTransport gives every benchmark client enough idle connections that 64 or 100 concurrent
// requests reuse keep-alive connections instead of dialling per request.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
}

// blobSource is deterministic pseudo-random content of a given size: the same seed gives the
// same bytes, so both servers receive identical blobs without either being held in memory.
func blobSource(seed uint64, size int64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return io.LimitReader(rand.NewChaCha8(key), size)
}

// blobDigest streams a blobSource through sha256.
func blobDigest(seed uint64, size int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, blobSource(seed, size)); err != nil {
		return "", fmt.Errorf("hashing blob %d: %w", seed, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func bytesDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// registryClient speaks the distribution API to one server.
type registryClient struct {
	base *url.URL
	http *http.Client
}

func newRegistryClient(baseURL string, t *http.Transport) (*registryClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("parsing server URL %q: %w", baseURL, err)
	}
	return &registryClient{base: u, http: &http.Client{Transport: t}}, nil
}

func (c *registryClient) url(path string) string { return c.base.JoinPath(path).String() }

// do sends req, reads the body to io.Discard and checks the status.
func (c *registryClient) do(req *http.Request, want int) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s %s: status %d, want %d: %s", req.Method, req.URL.Path, resp.StatusCode, want, bytes.TrimSpace(body))
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return nil, fmt.Errorf("%s %s: reading body: %w", req.Method, req.URL.Path, err)
	}
	return resp, nil
}

// location resolves an upload Location header, which may be relative, against the server URL.
func (c *registryClient) location(resp *http.Response) (*url.URL, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil, fmt.Errorf("%s %s: no Location header", resp.Request.Method, resp.Request.URL.Path)
	}
	u, err := c.base.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("parsing upload Location %q: %w", loc, err)
	}
	return u, nil
}

func (c *registryClient) startUpload(ctx context.Context, repo string) (*url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v2/"+repo+"/blobs/uploads/"), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req, http.StatusAccepted)
	if err != nil {
		return nil, fmt.Errorf("starting upload: %w", err)
	}
	return c.location(resp)
}

func (c *registryClient) finishUpload(ctx context.Context, loc *url.URL, digest string, body []byte) error {
	u := *loc
	q := u.Query()
	q.Set("digest", digest)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if _, err := c.do(req, http.StatusCreated); err != nil {
		return fmt.Errorf("finishing upload of %s: %w", digest, err)
	}
	return nil
}

// pushSmallBlob uploads b monolithically (POST, then PUT with the body).
func (c *registryClient) pushSmallBlob(ctx context.Context, repo string, b []byte) (string, error) {
	loc, err := c.startUpload(ctx, repo)
	if err != nil {
		return "", err
	}
	d := bytesDigest(b)
	return d, c.finishUpload(ctx, loc, d, b)
}

// pushChunked uploads a blobSource with POST, one PATCH per chunk, and a closing PUT. Each PATCH
// streams its chunk straight from the generator: the client never holds more than the transport's
// write buffer.
func (c *registryClient) pushChunked(ctx context.Context, repo string, seed uint64, size, chunk int64, digest string) error {
	loc, err := c.startUpload(ctx, repo)
	if err != nil {
		return err
	}
	src := blobSource(seed, size)
	for off := int64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc.String(), io.LimitReader(src, n))
		if err != nil {
			return err
		}
		req.ContentLength = n
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", off, off+n-1))
		resp, err := c.do(req, http.StatusAccepted)
		if err != nil {
			return fmt.Errorf("uploading chunk at offset %d: %w", off, err)
		}
		if loc, err = c.location(resp); err != nil {
			return err
		}
	}
	return c.finishUpload(ctx, loc, digest, nil)
}

// pushManifest pushes a one-layer OCI image with tag and returns the manifest digest.
func (c *registryClient) pushManifest(ctx context.Context, repo, tag string) (string, error) {
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer, err := io.ReadAll(blobSource(1, 4096))
	if err != nil {
		return "", err
	}
	configDigest, err := c.pushSmallBlob(ctx, repo, config)
	if err != nil {
		return "", fmt.Errorf("pushing config blob: %w", err)
	}
	layerDigest, err := c.pushSmallBlob(ctx, repo, layer)
	if err != nil {
		return "", fmt.Errorf("pushing layer blob: %w", err)
	}
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	manifest, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}{
		SchemaVersion: 2,
		MediaType:     ociManifestType,
		Config:        descriptor{"application/vnd.oci.image.config.v1+json", configDigest, len(config)},
		Layers:        []descriptor{{"application/vnd.oci.image.layer.v1.tar", layerDigest, len(layer)}},
	})
	if err != nil {
		return "", fmt.Errorf("encoding manifest: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url("/v2/"+repo+"/manifests/"+tag), bytes.NewReader(manifest))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", ociManifestType)
	if _, err := c.do(req, http.StatusCreated); err != nil {
		return "", fmt.Errorf("pushing manifest: %w", err)
	}
	return bytesDigest(manifest), nil
}

// verifyBlob GETs a blob and checks its length and digest; it also warms the page cache so the
// timed GETs that follow measure the server, not the disk.
func (c *registryClient) verifyBlob(ctx context.Context, repo, digest string, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v2/"+repo+"/blobs/"+digest), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("GET blob %s: %w", digest, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET blob %s: status %d", digest, resp.StatusCode)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("GET blob %s: reading body: %w", digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != size || got != digest {
		return fmt.Errorf("GET blob %s: got %d bytes with digest %s, want %d bytes", digest, n, got, size)
	}
	return nil
}

// getBlob GETs a blob to io.Discard and returns the number of bytes read.
func (c *registryClient) getBlob(ctx context.Context, repo, digest string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v2/"+repo+"/blobs/"+digest), nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET blob %s: %w", digest, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET blob %s: status %d", digest, resp.StatusCode)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, fmt.Errorf("GET blob %s: reading body after %d bytes: %w", digest, n, err)
	}
	if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.FormatInt(n, 10) {
		return n, fmt.Errorf("GET blob %s: read %d bytes, Content-Length %s", digest, n, cl)
	}
	return n, nil
}
