package main

import (
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
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoal-dev/shoal/e2e/procstat"
	"github.com/shoal-dev/shoal/e2e/testenv"
)

// streamLayer is an uncompressed layer of seeded ChaCha8 bytes: the same
// seed gives the same bytes, so the layer is hashed in one pass and
// uploaded from a second without ever being held in memory (the pull
// benchmark pushes a 1 GiB one).
type streamLayer struct {
	seed   uint64
	size   int64
	digest v1.Hash
}

func newStreamLayer(seed uint64, size int64) (*streamLayer, error) {
	h := sha256.New()
	if _, err := io.Copy(h, chachaBytes(seed, size)); err != nil {
		return nil, fmt.Errorf("hashing layer %d: %w", seed, err)
	}
	return &streamLayer{seed: seed, size: size, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}, nil
}

func chachaBytes(seed uint64, size int64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return io.LimitReader(rand.NewChaCha8(key), size)
}

func (l *streamLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *streamLayer) DiffID() (v1.Hash, error) { return l.digest, nil }
func (l *streamLayer) Size() (int64, error)     { return l.size, nil }
func (l *streamLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(chachaBytes(l.seed, l.size)), nil
}
func (l *streamLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l *streamLayer) MediaType() (types.MediaType, error) {
	return types.OCIUncompressedLayer, nil
}

// pushImage pushes an OCI image of the given layers to repo:tag at the
// origin as the builder user, through go-containerregistry (crane's
// library), so the push takes the registry token dance a real client does.
func pushImage(ctx context.Context, originURL, repo, tag string, layers ...*streamLayer) error {
	base := empty.Image
	for _, l := range layers {
		var err error
		if base, err = mutate.AppendLayers(base, l); err != nil {
			return fmt.Errorf("building the image: %w", err)
		}
	}
	img := mutate.ConfigMediaType(mutate.MediaType(base, types.OCIManifestSchema1), types.OCIConfigJSON)
	ref, err := name.ParseReference(strings.TrimPrefix(originURL, "http://")+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return fmt.Errorf("image reference: %w", err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: pusher, Password: pusherPassword})); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}

// fetchToken asks the origin's token endpoint for a pull token for repo
// with the puller's Basic credentials, as docker does once per pull.
func fetchToken(ctx context.Context, hc *http.Client, originURL, repo string) (string, error) {
	q := url.Values{"service": {"shoal"}, "scope": {"repository:" + repo + ":pull"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, originURL+"/auth/token?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(puller, pullerPassword)
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching a token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("fetching a token: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var answer struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || answer.Token == "" {
		return "", fmt.Errorf("fetching a token: no token in the answer (%v)", err)
	}
	return answer.Token, nil
}

// newTransport keeps enough idle connections that conns concurrent
// clients reuse keep-alive connections rather than dial per request.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        2 * conns,
		MaxIdleConnsPerHost: 2 * conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// sample is a server's counters and CPU time at one moment.
type sample struct {
	metrics testenv.Metrics
	cpu     time.Duration
}

// takeSample reads a server's CPU time and /metrics.
func takeSample(ctx context.Context, s *testenv.Server) (sample, error) {
	cpu, err := procstat.CPU(s.PID())
	if err != nil {
		return sample{}, err
	}
	m, err := testenv.ScrapeMetrics(ctx, s.URL()+"/metrics")
	if err != nil {
		return sample{}, err
	}
	return sample{metrics: m, cpu: cpu}, nil
}

// since returns how much the counter name (summed over the series with
// labels) grew from before to s.
func (s sample) since(before sample, name string, labels ...string) float64 {
	return s.metrics.Sum(name, labels...) - before.metrics.Sum(name, labels...)
}
