package testenv

import (
	"context"
	"fmt"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/auth"
)

// Capability asks the origin at originURL (anonymously) for a P2P
// capability for blob d of repository repo: the Shoal-Capability header
// of its answer to a blob HEAD, as an agent gets one.
func Capability(ctx context.Context, originURL, repo string, d digest.Digest) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, originURL+"/v2/"+repo+"/blobs/"+d.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("HEAD of blob %s: %w", d, err)
	}
	resp.Body.Close()
	tok := resp.Header.Get(auth.CapabilityHeader)
	if resp.StatusCode != http.StatusOK || tok == "" {
		return "", fmt.Errorf("HEAD of blob %s: %s with capability %q, want 200 with one", d, resp.Status, tok)
	}
	return tok, nil
}
