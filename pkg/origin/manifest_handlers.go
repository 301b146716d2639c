package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/gc"
)

// cachedManifest is a manifest's content, cached by digest: content never
// changes for a digest, so the cache needs no invalidation. Whether the
// manifest is still in a repository is checked in storage every time.
type cachedManifest struct {
	body      []byte
	mediaType string
}

// maxCachedManifest bounds what the cache keeps, so that its memory stays
// within cacheEntries x maxCachedManifest.
const maxCachedManifest = 64 << 10

func (s *Server) handleManifest(w http.ResponseWriter, r *http.Request, rt ociapi.Route) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return s.getManifest(w, r, rt)
	case http.MethodPut:
		return s.putManifest(w, r, rt)
	case http.MethodDelete:
		return s.deleteManifest(w, r, rt)
	}
	return errMethod(r)
}

// resolve turns a tag or digest reference into the digest of a manifest in
// repository name.
func (s *Server) resolve(ctx context.Context, name, ref string) (digest.Digest, error) {
	if ociapi.IsDigestRef(ref) {
		d, err := digest.Parse(ref)
		if err != nil {
			return "", &ociapi.Error{Status: http.StatusNotFound, Code: ociapi.CodeManifestUnknown,
				Message: "manifest unknown: " + ociapi.Quote(ref) + " is not a valid digest", Cause: err}
		}
		ok, err := s.linked(ctx, revisionLinkPath(name, d))
		if err != nil {
			return "", err
		}
		if !ok {
			return "", ociapi.ManifestUnknown(ref)
		}
		return d, nil
	}
	if !ociapi.ValidTag(ref) {
		return "", ociapi.ManifestUnknown(ref)
	}
	d, err := s.readLink(ctx, tagCurrentPath(name, ref))
	if isNotFound(err) {
		return "", ociapi.ManifestUnknown(ref)
	}
	return d, err
}

func (s *Server) manifestContent(ctx context.Context, d digest.Digest) (*cachedManifest, error) {
	if c, ok := s.manifests.Get(d); ok {
		return c, nil
	}
	body, err := s.driver.GetContent(ctx, blobDataPath(d))
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("stored manifest %s is not JSON: %w", d, err)
	}
	c := &cachedManifest{body: body, mediaType: detectMediaType(&m)}
	if len(body) <= maxCachedManifest {
		s.manifests.Add(d, c)
	}
	return c, nil
}

func (s *Server) getManifest(w http.ResponseWriter, r *http.Request, rt ociapi.Route) error {
	ctx := r.Context()
	if r.ProtoMajor == 1 && s.cfg.StorageTimeout > 0 && flushes(w) {
		// The storage calls run on this goroutine, not handed to a worker
		// and waited for: the most frequent requests pay no handoff. One
		// that stalls is answered by the storage guard's watchdog.
		ctx = withStallAnswer(ctx, &stalledRequest{s, w, r})
	}
	d, err := s.resolve(ctx, rt.Name, rt.Ref)
	if errors.Is(err, errAnswered) {
		return nil
	}
	if err != nil {
		return err
	}
	c, err := s.manifestContent(ctx, d)
	if errors.Is(err, errAnswered) {
		return nil
	}
	if err != nil {
		if isNotFound(err) {
			return ociapi.ManifestUnknown(rt.Ref)
		}
		return err
	}
	h := w.Header()
	h.Set("Content-Type", c.mediaType)
	h.Set("Content-Length", fmt.Sprint(len(c.body)))
	h.Set("Docker-Content-Digest", d.String())
	h.Set("ETag", `"`+d.String()+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		n, _ := w.Write(c.body)
		s.metrics.bytesOut.WithLabelValues(ociapi.Manifest).Add(float64(n))
	}
	return nil
}

// stalledRequest answers an HTTP/1 request whose storage call stalled, in
// its place (its goroutine is still in the call): the error, with its
// length, sent at once, and the connection closed once the call returns,
// so that the client waits for nothing more.
type stalledRequest struct {
	s *Server
	w http.ResponseWriter
	r *http.Request
}

// flushes tells whether w, or what it wraps, can send what was written
// at once, as the answer to a stalled request must be sent.
func flushes(w http.ResponseWriter) bool {
	for {
		switch u := w.(type) {
		case http.Flusher, interface{ FlushError() error }:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = u.Unwrap()
		default:
			return false
		}
	}
}

func (a *stalledRequest) answerStall(err error) {
	a.w.Header().Set("Connection", "close")
	a.s.writeError(a.w, a.r, err)
	if err := http.NewResponseController(a.w).Flush(); err != nil {
		a.s.log.Warn("sending the answer to a request whose storage call stalled", "path", a.r.URL.Path, "err", err)
	}
}

func (s *Server) putManifest(w http.ResponseWriter, r *http.Request, rt ociapi.Route) error {
	ctx := r.Context()
	if r.ContentLength > s.cfg.MaxManifestSize {
		s.metrics.limitRefusals.WithLabelValues(limitManifestSize).Inc()
		return &ociapi.Error{Status: http.StatusRequestEntityTooLarge, Code: ociapi.CodeSizeInvalid,
			Message: fmt.Sprintf("manifest of %d bytes is larger than the limit of %d bytes", r.ContentLength, s.cfg.MaxManifestSize)}
	}
	rb, done := s.watchBody(w, r, ociapi.Manifest)
	body, err := io.ReadAll(io.LimitReader(rb, s.cfg.MaxManifestSize+1))
	done()
	if err != nil {
		if errors.Is(err, errBodyStalled) {
			return &ociapi.Error{Status: http.StatusRequestTimeout, Code: ociapi.CodeManifestInvalid,
				Message: fmt.Sprintf("the manifest body sent nothing for %s; nothing was stored, push it again", s.cfg.BodyTimeout), Cause: err}
		}
		return &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodeManifestInvalid, Message: "reading the manifest body failed", Cause: err}
	}
	if int64(len(body)) > s.cfg.MaxManifestSize {
		s.metrics.limitRefusals.WithLabelValues(limitManifestSize).Inc()
		return &ociapi.Error{Status: http.StatusRequestEntityTooLarge, Code: ociapi.CodeSizeInvalid,
			Message: fmt.Sprintf("manifest is larger than the limit of %d bytes", s.cfg.MaxManifestSize)}
	}
	var tags []string
	d := digest.SHA256.FromBytes(body)
	if ociapi.IsDigestRef(rt.Ref) {
		want, err := ociapi.ParseDigest(rt.Ref)
		if err != nil {
			return err
		}
		if d = want.Algorithm().FromBytes(body); d != want {
			return &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodeDigestInvalid,
				Message: fmt.Sprintf("manifest digest mismatch: the body has digest %s, the reference says %s", d, want)}
		}
	} else {
		if err := ociapi.ValidateTag(rt.Ref); err != nil {
			return err
		}
		tags = append(tags, rt.Ref)
	}
	for _, t := range r.URL.Query()["tag"] {
		if err := ociapi.ValidateTag(t); err != nil {
			return err
		}
		tags = append(tags, t)
	}
	m, mt, err := parseManifest(body, r.Header.Get("Content-Type"))
	if err != nil {
		return err
	}
	if n := referenceCount(m); n > s.cfg.MaxManifestReferences {
		s.metrics.limitRefusals.WithLabelValues(limitManifestReferences).Inc()
		return &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodeManifestInvalid,
			Message: fmt.Sprintf("manifest lists %d descriptors (config, layers or manifests); this registry accepts at most %d (maxManifestReferences)", n, s.cfg.MaxManifestReferences),
			Detail:  map[string]int{"references": n, "limit": s.cfg.MaxManifestReferences}}
	}
	select {
	case s.validations <- struct{}{}:
		defer func() { <-s.validations }()
	default:
		s.metrics.limitRefusals.WithLabelValues(limitManifestValidations).Inc()
		w.Header().Set("Retry-After", "1")
		return &ociapi.Error{Status: http.StatusTooManyRequests, Code: ociapi.CodeTooManyRequests,
			Message: fmt.Sprintf("this origin node is checking %d manifest pushes already (maxManifestValidations); retry in a second", cap(s.validations))}
	}
	present, err := s.checkReferences(ctx, rt.Name, m, mt)
	if err != nil {
		return err
	}

	// Order matters for online GC: content, then the revision link, then tags.
	if _, err := s.blobSize(ctx, d); err != nil {
		if !isNotFound(err) {
			return err
		}
		if err := s.driver.PutContent(ctx, blobDataPath(d), body); err != nil {
			return err
		}
	}
	if err := s.writeLink(ctx, revisionLinkPath(rt.Name, d), d); err != nil {
		return err
	}
	s.catalog.add(s, rt.Name)
	if err := s.checkGuard(ctx, rt.Name, nil, append(present, d)); err != nil {
		if derr := s.driver.Delete(ctx, path0(revisionLinkPath(rt.Name, d))); derr != nil && !isNotFound(derr) {
			s.log.Warn("removing the revision link of a refused manifest", "digest", d, "err", derr)
		}
		return guardError(err, ociapi.CodeManifestBlobUnknown, d)
	}
	if m.Subject != nil {
		desc, _ := json.Marshal(referrerDescriptor(m, mt, d, int64(len(body))))
		if err := s.driver.PutContent(ctx, referrerEntryPath(rt.Name, m.Subject.Digest, d), desc); err != nil {
			return err
		}
		w.Header().Set("OCI-Subject", m.Subject.Digest.String())
	}
	for _, t := range tags {
		if err := s.tag(ctx, rt.Name, t, d); err != nil {
			return err
		}
		w.Header().Add("OCI-Tag", t)
	}
	h := w.Header()
	h.Set("Location", "/v2/"+rt.Name+"/manifests/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) tag(ctx context.Context, name, tag string, d digest.Digest) error {
	if err := s.writeLink(ctx, tagIndexLinkPath(name, tag, d), d); err != nil {
		return err
	}
	return s.writeLink(ctx, tagCurrentPath(name, tag), d)
}

// referenceCount is how many descriptors a manifest lists, the number
// MaxManifestReferences bounds.
func referenceCount(m *manifest) int {
	n := len(m.Layers) + len(m.Manifests)
	if m.Config != nil {
		n++
	}
	return n
}

// errReferenceMissing stops the checks of a manifest's references at the
// first that is missing: the push fails anyway.
var errReferenceMissing = errors.New("manifest reference missing")

// checkReferences makes sure that what a manifest references is in the
// repository, so that no pull of it can fail on a missing blob. Foreign
// layers and descriptors that embed their content (data) are exempt. Sparse
// manifests (AllowSparseManifests) may miss anything. It returns the
// digests that are present, for the GC guard.
//
// Each digest is checked once, ManifestCheckConcurrency at a time, and the
// checks stop at the first missing reference, so that a manifest listing
// many unknown blobs costs a few storage calls, not two per blob.
func (s *Server) checkReferences(ctx context.Context, name string, m *manifest, mt string) ([]digest.Digest, error) {
	index := !isImageType(mt)
	var refs []digest.Digest
	seen := make(map[digest.Digest]bool)
	add := func(d ocispec.Descriptor) {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			refs = append(refs, d.Digest)
		}
	}
	if index {
		for _, d := range m.Manifests {
			add(d)
		}
	} else {
		for _, d := range append([]ocispec.Descriptor{*m.Config}, m.Layers...) {
			if !foreign(d) && d.Data == nil {
				add(d)
			}
		}
	}
	found := make([]bool, len(refs))
	var (
		mu      sync.Mutex
		missing []string
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.ManifestCheckConcurrency)
	for i, d := range refs {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			ok, err := s.referencePresent(gctx, name, d, index)
			if err != nil {
				return err
			}
			if ok {
				found[i] = true
				return nil
			}
			mu.Lock()
			missing = append(missing, d.String())
			mu.Unlock()
			if s.cfg.AllowSparseManifests {
				return nil
			}
			return errReferenceMissing
		})
	}
	if err := g.Wait(); err != nil && !errors.Is(err, errReferenceMissing) {
		return nil, err
	}
	if len(missing) == 0 || s.cfg.AllowSparseManifests {
		var present []digest.Digest
		for i, d := range refs {
			if found[i] {
				present = append(present, d)
			}
		}
		return present, nil
	}
	sort.Strings(missing)
	return nil, &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodeManifestBlobUnknown,
		Message: fmt.Sprintf("manifest references blob(s) or manifest(s) not pushed to %s first, e.g. %s (checking stopped at the first missing)", name, missing[0]),
		Detail:  map[string]any{"digests": missing}}
}

// referencePresent tells whether d is in repository name: a blob linked
// there (image manifests) or a manifest (indexes).
func (s *Server) referencePresent(ctx context.Context, name string, d digest.Digest, index bool) (bool, error) {
	if index {
		return s.linked(ctx, revisionLinkPath(name, d))
	}
	if _, err := s.repoBlobSize(ctx, name, d); err != nil {
		if isAPIError(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// guardError answers a push that the GC guard refused. A blob being
// collected is the client's to upload again; anything else is the storage's.
func guardError(err error, code string, d digest.Digest) error {
	if !errors.Is(err, gc.ErrBeingCollected) {
		return err
	}
	status := http.StatusNotFound
	if code == ociapi.CodeManifestBlobUnknown {
		status = http.StatusBadRequest
	}
	return &ociapi.Error{Status: status, Code: code,
		Message: fmt.Sprintf("garbage collection is removing content this push needs (%s); push it again", d), Cause: err}
}

func (s *Server) deleteManifest(w http.ResponseWriter, r *http.Request, rt ociapi.Route) error {
	ctx := r.Context()
	if !s.cfg.DeleteEnabled {
		return ociapi.Errorf(http.StatusMethodNotAllowed, ociapi.CodeUnsupported, "deletes are disabled on this origin")
	}
	if !ociapi.IsDigestRef(rt.Ref) {
		if !ociapi.ValidTag(rt.Ref) {
			return ociapi.ManifestUnknown(rt.Ref)
		}
		if _, err := s.driver.Stat(ctx, tagCurrentPath(rt.Name, rt.Ref)); err != nil {
			if isNotFound(err) {
				return ociapi.ManifestUnknown(rt.Ref)
			}
			return err
		}
		if err := s.driver.Delete(ctx, tagPath(rt.Name, rt.Ref)); err != nil && !isNotFound(err) {
			return err
		}
	} else {
		d, err := ociapi.ParseDigest(rt.Ref)
		if err != nil {
			return err
		}
		if err := s.DeleteManifest(ctx, rt.Name, d); err != nil {
			return err
		}
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// DeleteManifest removes manifest d from repository name with every tag
// that points to it, as DELETE /v2/<name>/manifests/<digest> does. Blobs
// are left to garbage collection.
func (s *Server) DeleteManifest(ctx context.Context, name string, d digest.Digest) error {
	ok, err := s.linked(ctx, revisionLinkPath(name, d))
	if err != nil {
		return err
	}
	if !ok {
		return ociapi.ManifestUnknown(d.String())
	}
	tags, err := s.listTags(ctx, name)
	if err != nil && !isNotFound(err) {
		return err
	}
	for _, t := range tags {
		cur, err := s.readLink(ctx, tagCurrentPath(name, t))
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return err
		}
		if cur == d {
			if err := s.driver.Delete(ctx, tagPath(name, t)); err != nil && !isNotFound(err) {
				return err
			}
		}
	}
	if c, err := s.manifestContent(ctx, d); err == nil {
		var m manifest
		if json.Unmarshal(c.body, &m) == nil && m.Subject != nil {
			if err := s.driver.Delete(ctx, referrerEntryPath(name, m.Subject.Digest, d)); err != nil && !isNotFound(err) {
				return err
			}
		}
	}
	if err := s.driver.Delete(ctx, path0(revisionLinkPath(name, d))); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// DeleteTag removes one tag from repository name.
func (s *Server) DeleteTag(ctx context.Context, name, tag string) error {
	if err := s.driver.Delete(ctx, tagPath(name, tag)); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

func (s *Server) listTags(ctx context.Context, name string) ([]string, error) {
	entries, err := s.driver.List(ctx, tagsPath(name))
	if err != nil {
		return nil, err
	}
	tags := make([]string, 0, len(entries))
	for _, e := range entries {
		tags = append(tags, path.Base(e))
	}
	sort.Strings(tags)
	return tags, nil
}

func (s *Server) handleReferrers(w http.ResponseWriter, r *http.Request, rt ociapi.Route) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errMethod(r)
	}
	ctx := r.Context()
	subject, err := ociapi.ParseDigest(rt.Ref)
	if err != nil {
		return err
	}
	descs := []ocispec.Descriptor{}
	algs, err := s.driver.List(ctx, referrersPath(rt.Name, subject))
	if err != nil && !isNotFound(err) {
		return err
	}
	filter := r.URL.Query().Get("artifactType")
	for _, alg := range algs {
		entries, err := s.driver.List(ctx, alg)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return err
		}
		for _, e := range entries {
			b, err := s.driver.GetContent(ctx, e)
			if err != nil {
				if isNotFound(err) {
					continue
				}
				return err
			}
			var desc ocispec.Descriptor
			if err := json.Unmarshal(b, &desc); err != nil {
				s.log.Warn("corrupt referrers entry", "path", e, "err", err)
				continue
			}
			if filter != "" && desc.ArtifactType != filter {
				continue
			}
			descs = append(descs, desc)
		}
	}
	sort.Slice(descs, func(i, j int) bool { return descs[i].Digest < descs[j].Digest })
	body, err := json.Marshal(ocispec.Index{
		Versioned: specsVersioned,
		MediaType: mediaTypeOCIIndex,
		Manifests: descs,
	})
	if err != nil {
		return err
	}
	h := w.Header()
	if filter != "" {
		h.Set("OCI-Filters-Applied", "artifactType")
	}
	h.Set("Content-Type", mediaTypeOCIIndex)
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
	return nil
}

func isAPIError(err error) bool {
	var ae *ociapi.Error
	return errors.As(err, &ae)
}
