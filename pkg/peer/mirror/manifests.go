package mirror

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// maxManifestSize is the most read from the origin for one manifest or tag
// list; the origin refuses larger manifests anyway.
const maxManifestSize = 4 << 20

// cachedResponse is an origin answer kept in memory: the status, the
// relayed headers and the body.
type cachedResponse struct {
	status int
	header http.Header
	body   []byte
}

// size is the memory the answer holds, for the caches' byte budgets.
func (c *cachedResponse) size() int64 {
	n := int64(len(c.body))
	for k, vs := range c.header {
		n += int64(len(k))
		for _, v := range vs {
			n += int64(len(v))
		}
	}
	return n
}

func (c *cachedResponse) write(w http.ResponseWriter, r *http.Request) {
	for k, vs := range c.header {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(c.body)))
	w.WriteHeader(c.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(c.body)
	}
}

// serveManifest answers GET/HEAD of a manifest by tag or digest. The
// origin is asked with GET in both cases, so the answer can be cached and
// serve the GET that follows dockerd's HEAD.
func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	// ref is a valid tag or digest (route.validate).
	dgst, err := digest.Parse(ref)
	byDigest := err == nil
	cred := credentialKey(r)
	accept := manifestAccept(r.Header)
	var key string
	var cached *cachedResponse
	// tagKey is a tag's key for credentials cred: their hash in the
	// TagTTL cache, what offlineCredential says in the offline one.
	tagKey := func(cred string) string { return name + ":" + ref + "|" + accept + "|" + cred }
	if byDigest {
		// Content never changes for a digest, so it is kept for good; but
		// the origin still decides who may read the repository, at most
		// AuthTTL ago. While the origin is down it cannot decide: what is
		// cached is served rather than failing the pull.
		key = name + "@" + dgst.String()
		if c, ok := s.manifests.Get(key); ok {
			if _, ok := s.auth.Get(repoAuthKey(name, cred)); ok || (s.originDown() && s.mayReadOffline(r, name, dgst)) {
				s.metrics.manifestCache.WithLabelValues("hit").Inc()
				c.write(w, r)
				return
			}
			cached = c
		}
	} else {
		key = tagKey(cred)
		if c, ok := s.tags.Get(key); ok {
			s.metrics.manifestCache.WithLabelValues("hit").Inc()
			c.write(w, r)
			return
		}
	}
	s.metrics.manifestCache.WithLabelValues("miss").Inc()
	v, err, _ := s.fetches.Do("manifest|"+name+"|"+ref+"|"+accept+"|"+cred, func() (any, error) {
		return s.fetchManifest(r, name, ref, accept, dgst, byDigest)
	})
	if err != nil {
		ae := asError(err)
		if cached != nil && isOriginDown(ae) && s.mayReadOffline(r, name, dgst) {
			s.log.Warn("origin unavailable: manifest served from the mirror's cache", "name", name, "digest", dgst, "err", ae)
			cached.write(w, r)
			return
		}
		if !byDigest && isOriginDown(ae) {
			if c, ok := s.staleTag(r, name, tagKey); ok {
				s.metrics.manifestCache.WithLabelValues("stale").Inc()
				s.log.Warn("origin unavailable: tag served from its last known manifest", "name", name, "tag", ref, "digest", c.header.Get("Docker-Content-Digest"), "err", ae)
				c.write(w, r)
				return
			}
		}
		s.writeError(w, r, ae)
		return
	}
	c := v.(*cachedResponse)
	if c.status == http.StatusOK {
		if !byDigest {
			s.tags.Add(key, c)
			if s.staleTags != nil {
				s.staleTags.Add(tagKey(s.offlineCredential(r, name)), c)
			}
		}
	}
	c.write(w, r)
}

// staleTag returns the origin's last answer for a tag, kept OfflineTTL
// under tagKey of the credentials it was given to (offlineLookup), while
// the origin's yes to them for the repository stands: a 401 or 403 since
// (noteNo) withdraws the tag too.
func (s *Server) staleTag(r *http.Request, name string, tagKey func(cred string) string) (*cachedResponse, bool) {
	if s.staleTags == nil {
		return nil, false
	}
	var c *cachedResponse
	ok := s.offlineLookup(r, name, func(cred string) bool {
		if _, yes := s.offline.Get(repoAuthKey(name, cred)); !yes {
			return false
		}
		var found bool
		c, found = s.staleTags.Get(tagKey(cred))
		return found
	})
	return c, ok
}

// fetchManifest GETs a manifest from the origin and caches a good answer.
// The origin is sent accept, the client's Accept reduced to the manifest
// types (manifestAccept): what the answer is cached under must be all that
// could have shaped it.
func (s *Server) fetchManifest(r *http.Request, name, ref, accept string, dgst digest.Digest, byDigest bool) (*cachedResponse, error) {
	// Not the client's context: the result is shared with the requests
	// coalesced onto this one, which must not fail because the first
	// client went away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.OriginTimeout)
	defer cancel()
	resp, err := s.originRequest(ctx, http.MethodGet, "/v2/"+name+"/manifests/"+ref, nil, nil, r, http.Header{"Accept": {accept}})
	if err != nil {
		return nil, s.errOrigin(err)
	}
	defer resp.Body.Close()
	if originUnavailableStatus(resp.StatusCode) {
		return nil, s.errOriginStatus(resp, http.MethodGet, "manifest "+name+":"+ref)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, s.errOrigin(fmt.Errorf("reading manifest %s:%s: %w", name, ref, err))
	}
	c := &cachedResponse{status: resp.StatusCode, header: http.Header{}, body: body}
	copyRelayed(c.header, resp.Header)
	c.header.Del("Content-Length")
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		s.noteNo(r, name)
	}
	if resp.StatusCode != http.StatusOK {
		return c, nil
	}
	if len(body) > maxManifestSize {
		return nil, ociapi.Errorf(http.StatusBadGateway, ociapi.CodeUnknown, "the origin sent a manifest larger than %d bytes", maxManifestSize)
	}
	if !byDigest {
		dgst, err = digest.Parse(resp.Header.Get("Docker-Content-Digest"))
		if err != nil {
			dgst = digest.FromBytes(body)
		}
	}
	if err := dgst.Validate(); err != nil || dgst.Algorithm().FromBytes(body) != dgst {
		// Never cache (or serve) content under a digest it does not have.
		return nil, ociapi.Errorf(http.StatusBadGateway, ociapi.CodeUnknown, "the origin's manifest %s:%s does not match digest %s", name, ref, dgst)
	}
	c.header.Set("Docker-Content-Digest", dgst.String())
	s.auth.Add(repoAuthKey(name, credentialKey(r)), -1)
	s.noteYes(r, name)
	s.notePresent(name, dgst)
	if int64(len(body)) <= s.cfg.MaxCachedManifest {
		s.manifests.Add(name+"@"+dgst.String(), c)
	}
	return c, nil
}

// manifestMediaTypes are the manifest types a registry chooses between by
// the Accept header: OCI and Docker, single-platform and multi-platform,
// and Docker's old schema 1.
var manifestMediaTypes = map[string]bool{
	"application/vnd.oci.image.manifest.v1+json":                true,
	"application/vnd.oci.image.index.v1+json":                   true,
	"application/vnd.docker.distribution.manifest.v2+json":      true,
	"application/vnd.docker.distribution.manifest.list.v2+json": true,
	"application/vnd.docker.distribution.manifest.v1+json":      true,
	"application/vnd.docker.distribution.manifest.v1+prettyjws": true,
}

// manifestAccept is the request's Accept list reduced to what can change a
// registry's manifest answer: the known manifest media types, lower case,
// without parameters (q=), sorted and without duplicates, joined by ", ".
// It is both the cache key and what the origin is sent, so a client
// varying the header (junk types, order, repeats) can neither grow the
// caches nor get an answer cached for another Accept list. dockerd builds
// its list from a Go map, so the same client sends the same types in a
// different order from one pull to the next; registries do not weigh the
// order. "" when the client named no known type, which the origin treats
// as no Accept header at all.
func manifestAccept(h http.Header) string {
	var types []string
	for _, v := range h.Values("Accept") {
		for _, t := range strings.Split(v, ",") {
			t, _, _ = strings.Cut(t, ";")
			if t = strings.ToLower(strings.TrimSpace(t)); manifestMediaTypes[t] {
				types = append(types, t)
			}
		}
	}
	slices.Sort(types)
	return strings.Join(slices.Compact(types), ", ")
}

// repoAuthKey marks, in the short-lived cache, that the origin let these
// credentials read a manifest of the repository.
func repoAuthKey(name, cred string) string { return "auth|" + name + "|" + cred }

// serveTags answers the tag list, cached for TagTTL per query and
// credentials. Only the query parameters of the distribution spec (n,
// last) are passed on and make the key, each once.
func (s *Server) serveTags(w http.ResponseWriter, r *http.Request, name string) {
	q := url.Values{}
	for _, k := range []string{"n", "last"} {
		if v := r.URL.Query().Get(k); v != "" {
			q.Set(k, v)
		}
	}
	cred := credentialKey(r)
	key := "tags|" + name + "?" + q.Encode() + "|" + cred
	if c, ok := s.tags.Get(key); ok && c != nil {
		c.write(w, r)
		return
	}
	v, err, _ := s.fetches.Do(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.OriginTimeout)
		defer cancel()
		resp, err := s.originRequest(ctx, http.MethodGet, "/v2/"+name+"/tags/list", q, nil, r, nil)
		if err != nil {
			return nil, s.errOrigin(err)
		}
		defer resp.Body.Close()
		if originUnavailableStatus(resp.StatusCode) {
			return nil, s.errOriginStatus(resp, http.MethodGet, "the tag list of "+name)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize))
		if err != nil {
			return nil, s.errOrigin(fmt.Errorf("reading tag list of %s: %w", name, err))
		}
		c := &cachedResponse{status: resp.StatusCode, header: http.Header{}, body: body}
		copyRelayed(c.header, resp.Header)
		c.header.Del("Content-Length")
		if c.status == http.StatusOK {
			s.tags.Add(key, c)
		}
		return c, nil
	})
	if err != nil {
		s.writeError(w, r, asError(err))
		return
	}
	v.(*cachedResponse).write(w, r)
}
