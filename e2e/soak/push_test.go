package soak_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
)

const mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"

// pusher pushes images to its own repository, one after the other, as a
// build machine does: a layer in three chunks, a config, a tagged manifest.
type pusher struct {
	d    *deployment
	id   int
	done []pushRecord // written only by the pusher's goroutine
}

// pushRecord is one push and how it ended.
type pushRecord struct {
	repo, tag string
	manifest  []byte
	blobs     []blob // the layer and the config
	err       error  // nil: every request succeeded
	phase     string // the fault in force when it ended
}

func (p *pusher) push(ctx context.Context, n int) pushRecord {
	repo := fmt.Sprintf("soak/push-%d", p.id)
	if p.id < 0 {
		repo = "soak/warm-up"
	}
	layer := randomBytes(uint64(1_000_000+(p.id+1)*100_000+n), (256<<10)*(1+n%4)+n)
	config := fmt.Appendf(nil, `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%q]}}`, digest.FromBytes(layer))
	r := pushRecord{repo: repo, tag: fmt.Sprintf("n%d", n),
		blobs: []blob{{repo, digest.FromBytes(layer), int64(len(layer))}, {repo, digest.FromBytes(config), int64(len(config))}}}
	r.manifest = fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}]}`,
		mediaTypeManifest, r.blobs[1].digest, r.blobs[1].size, r.blobs[0].digest, r.blobs[0].size)
	r.err = p.pushImage(ctx, r, layer, config)
	r.phase = p.d.currentPhase()
	p.done = append(p.done, r)
	return r
}

func (p *pusher) pushImage(ctx context.Context, r pushRecord, layer, config []byte) error {
	base := "/v2/" + r.repo
	resp, err := p.do(ctx, "POST", base+"/blobs/uploads/", nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	loc := resp.Header.Get("Location")
	third := len(layer) / 3
	for _, c := range [][2]int{{0, third}, {third, 2 * third}, {2 * third, len(layer)}} {
		resp, err := p.do(ctx, "PATCH", loc, layer[c[0]:c[1]], http.StatusAccepted,
			"Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("%d-%d", c[0], c[1]-1))
		if err != nil {
			return err
		}
		loc = resp.Header.Get("Location")
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	if _, err := p.do(ctx, "PUT", loc+sep+"digest="+r.blobs[0].digest.String(), nil, http.StatusCreated); err != nil {
		return err
	}
	if _, err := p.do(ctx, "POST", base+"/blobs/uploads/?digest="+r.blobs[1].digest.String(), config, http.StatusCreated); err != nil {
		return err
	}
	_, err = p.do(ctx, "PUT", base+"/manifests/"+r.tag, r.manifest, http.StatusCreated, "Content-Type", mediaTypeManifest)
	return err
}

// do makes one request of a push, wanting status.
func (p *pusher) do(ctx context.Context, method, target string, body []byte, status int, hdr ...string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if strings.HasPrefix(target, "/") {
		target = p.d.origin.URL() + target
	}
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := p.d.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	if resp.StatusCode != status {
		return nil, fmt.Errorf("%s: %s: %s", method, resp.Status, bytes.TrimSpace(b))
	}
	return resp, nil
}
