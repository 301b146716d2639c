package mirror

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// PrefetchPrefix starts the path of the agent's prefetch endpoint:
//
//	POST /shoal/v1/prefetch/<repository>/blobs/<digest>
//
// The agent fetches the blob into its piece store as a pull would (the
// origin authorizes it with the request's credentials, then peers and
// seeders send its pieces), and answers once it is complete, without
// sending the bytes anywhere. `shoalctl preheat --agents` calls it so that
// selected hosts hold an image before a rollout asks every host for it.
const PrefetchPrefix = "/shoal/v1/prefetch/"

// PrefetchResult is the prefetch endpoint's answer.
type PrefetchResult struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// Cached is true when the blob was complete here before the request.
	Cached bool `json:"cached"`
}

// servePrefetch answers the prefetch endpoint. Its access decision is a
// blob GET's: the same credentials that may pull the blob through this
// agent may prefetch it, and nobody else can make the agent fetch anything.
func (s *Server) servePrefetch(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.writeError(w, r, ociapi.Errorf(http.StatusMethodNotAllowed, ociapi.CodeUnsupported,
			"the prefetch endpoint takes POST %s<repository>/blobs/<digest>", PrefetchPrefix))
		return
	}
	rest := strings.TrimPrefix(r.URL.EscapedPath(), PrefetchPrefix)
	rt, perr := parseRoute("/v2/" + rest)
	if perr == nil && rt.kind != routeBlob {
		perr = ociapi.Errorf(http.StatusNotFound, ociapi.CodeUnsupported,
			"%s is not a prefetch path: POST %s<repository>/blobs/<digest>", ociapi.Quote(r.URL.EscapedPath()), PrefetchPrefix)
	}
	if perr == nil {
		perr = rt.validate()
	}
	if perr != nil {
		s.writeError(w, r, perr)
		s.metrics.prefetches.WithLabelValues("invalid").Inc()
		return
	}
	d := digest.Digest(rt.ref)
	res, err := s.prefetch(r, rt.name, d)
	if err != nil {
		s.writeError(w, r, err)
		s.metrics.prefetches.WithLabelValues("failed").Inc()
		return
	}
	result := "fetched"
	if res.Cached {
		result = "cached"
	}
	s.metrics.prefetches.WithLabelValues(result).Inc()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// prefetch authorizes d in repository name at the origin and reads it
// through the P2P engine to its end, which leaves it complete and verified
// in the piece store.
func (s *Server) prefetch(r *http.Request, name string, d digest.Digest) (PrefetchResult, *ociapi.Error) {
	size, deny := s.blobSize(r, name, d)
	if deny != nil {
		return PrefetchResult{}, deny
	}
	if s.blobs == nil {
		return PrefetchResult{}, ociapi.Errorf(http.StatusConflict, ociapi.CodeUnsupported,
			"this agent has no P2P engine (no origin seeders configured or learned): it proxies blobs from the origin and keeps none, so there is nothing to prefetch into")
	}
	capability, _ := s.capabilities.Get(d.String())
	blob, err := s.blobs.Open(r.Context(), d, capability)
	if errors.Is(err, ErrFromOrigin) {
		return PrefetchResult{}, ociapi.Errorf(http.StatusConflict, ociapi.CodeUnsupported,
			"blob %s would be proxied from the origin (no origin seeders known yet): nothing to prefetch into; see /readyz", d)
	}
	if err != nil {
		e := ociapi.Errorf(http.StatusServiceUnavailable, ociapi.CodeUnavailable,
			"blob %s could not be fetched from peers or the origin seeders; retry later", d)
		e.Cause = err
		return PrefetchResult{}, e
	}
	defer blob.Close()
	res := PrefetchResult{Digest: d, Size: blob.Size(), Cached: blob.Cached()}
	if blob.Size() != size {
		return PrefetchResult{}, ociapi.Errorf(http.StatusBadGateway, ociapi.CodeUnknown,
			"blob %s: the origin says %d bytes, its piece metainfo %d", d, size, blob.Size())
	}
	if res.Cached {
		return res, nil
	}
	rc, err := blob.NewReader(r.Context(), 0)
	if err == nil {
		var n int64
		n, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err == nil && n != size {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		e := ociapi.Errorf(http.StatusServiceUnavailable, ociapi.CodeUnavailable,
			"blob %s: the download stopped before its end; retry later", d)
		e.Cause = err
		return PrefetchResult{}, e
	}
	return res, nil
}
