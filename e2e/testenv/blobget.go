package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
)

// GetDigest GETs url with client and hashes the body as it streams, without
// keeping it: what a test pulling a blob through a registry or mirror
// checks. It returns how many bytes came and their sha256 digest
// ("sha256:<hex>"); err is set when the request failed, the answer was not
// 200 (with the start of its body) or the body ended early, and n and
// digest then cover what came before.
func GetDigest(ctx context.Context, client *http.Client, url string) (n int64, digest string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	h := sha256.New()
	n, err = io.Copy(h, resp.Body)
	return n, "sha256:" + hex.EncodeToString(h.Sum(nil)), err
}
