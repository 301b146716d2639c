// Package mirror is the peer-agent's registry mirror: the pull side of the
// Docker Registry v2 / OCI Distribution API that dockerd (registry-mirrors)
// and containerd (hosts.toml) talk to on every host.
//
// Manifests, tag lists and anything else small are proxied to the origin
// with the client's credentials, so the origin stays the authority on
// access; tag answers are cached briefly and manifests by digest for good.
// Blobs are authorized against the origin (a HEAD with the client's
// credentials, the decision cached briefly) and then served from a Blobs
// source, the P2P engine, which streams verified pieces as they arrive.
// Without a Blobs source the mirror proxies blobs from the origin directly.
// Requests to the origin are bounded (dial, response headers), so a dead
// origin is a prompt 502/503 naming it; while it is down, content cached
// by digest is still served to credentials it said yes to (and to a user's
// new token, when it verifies with the origin's keys).
// The origin's auth challenges are relayed with their realm pointing at the
// mirror's own token endpoint, which proxies to the origin's.
// Pushes are refused with an error naming the origin to push to.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// Config tunes the mirror. DefaultConfig returns working values apart from
// Origin, which must be set.
type Config struct {
	// Origin is the base URL of the origin's registry API, e.g.
	// https://registry.example.com. Clients are told to push there. Set by
	// the agent from its own origin setting.
	Origin string `yaml:"-"`
	// TagTTL is how long a manifest fetched by tag (and a tag list) is
	// served from memory. Short, because tags move: 5s spares the origin
	// the burst of a whole fleet resolving the same tag at once while a
	// push is visible within seconds.
	TagTTL time.Duration `yaml:"tagTTL"`
	// TagCacheBytes bounds the memory of the answers kept TagTTL
	// (manifests by tag, tag lists), keys included: 16 MiB, thousands of
	// typical manifests. Entries are keyed by repository, tag, the known
	// manifest media types of the Accept header and a hash of the
	// credentials, so junk headers cannot multiply them; past the budget
	// the oldest go first.
	TagCacheBytes int64 `yaml:"tagCacheBytes"`
	// OfflineTagCacheBytes bounds the memory of the tags' last manifests
	// kept OfflineTTL for while the origin is down: 32 MiB, more than
	// TagCacheBytes because they are kept for a day, not seconds.
	OfflineTagCacheBytes int64 `yaml:"offlineTagCacheBytes"`
	// OfflineTTL is how long the origin's last answers are used while it
	// cannot be reached or answers 502/503/504: its yes to "may these
	// credentials read this repository", which lets them read what this
	// agent holds of it (manifests by digest, complete blobs), and the
	// manifest it last returned for a tag (per repository, Accept list and
	// credentials): 24h. While the origin answers, it decides and tags
	// follow it. 0 turns this off: nothing is served while the origin is
	// down.
	OfflineTTL time.Duration `yaml:"offlineTTL"`
	// AuthTTL is how long an origin's yes to "may these credentials read
	// this blob" is reused. Revoking access takes effect after it: 10s.
	AuthTTL time.Duration `yaml:"authTTL"`
	// ManifestCacheBytes bounds the memory of the manifests kept by digest
	// (content addressed, so kept until evicted, least recently used
	// first): 64 MiB, the manifests of thousands of images. Only manifests
	// up to MaxCachedManifest bytes are kept.
	ManifestCacheBytes int64 `yaml:"manifestCacheBytes"`
	// MaxCachedManifest is the largest manifest kept in memory: 1 MiB.
	MaxCachedManifest int64 `yaml:"maxCachedManifest"`
	// OriginTimeout bounds one request to the origin for a manifest, a tag
	// list or a blob authorization (not blob bodies): 30s.
	OriginTimeout time.Duration `yaml:"originTimeout"`
	// OriginDialTimeout bounds connecting to the origin: the TCP connect,
	// and the TLS handshake for an https origin, each: 5s. Without it a
	// host that drops packets costs the kernel's SYN retries, about 2m.
	OriginDialTimeout time.Duration `yaml:"originDialTimeout"`
	// OriginHeaderTimeout bounds the wait for the origin's response
	// headers once a request is sent, for every request including blobs
	// proxied from the origin (whose bodies then stream for as long as they
	// take): 30s.
	OriginHeaderTimeout time.Duration `yaml:"originHeaderTimeout"`
}

// DefaultConfig returns the defaults, with no origin.
func DefaultConfig() Config {
	return Config{
		TagTTL:               5 * time.Second,
		TagCacheBytes:        16 << 20,
		OfflineTagCacheBytes: 32 << 20,
		OfflineTTL:           24 * time.Hour,
		AuthTTL:              10 * time.Second,
		ManifestCacheBytes:   64 << 20,
		MaxCachedManifest:    1 << 20,
		OriginTimeout:        30 * time.Second,
		OriginDialTimeout:    5 * time.Second,
		OriginHeaderTimeout:  30 * time.Second,
	}
}

// Blobs is where the mirror takes blob content from: the P2P engine.
type Blobs interface {
	// Open starts or joins the download of d and returns once its size is
	// known. capability is the P2P capability the origin returned with the
	// blob's authorization (empty if none): seeders and peers serve the
	// blob only against one. The caller must Close the blob.
	Open(ctx context.Context, d digest.Digest, capability string) (Blob, error)
}

// ErrFromOrigin is returned (wrapped) by a Blobs source's Open when it has
// nowhere to take a blob from but the origin's registry API (an agent that
// knows no origin seeder yet): the mirror then proxies the blob from the
// origin, as without a Blobs source.
var ErrFromOrigin = errors.New("blob to be proxied from the origin's registry API")

// LocalBlobs is implemented by a Blobs source that can tell, without
// starting a download, whether it holds a blob complete. The mirror then
// serves such a blob while the origin cannot be asked about it.
type LocalBlobs interface {
	// Local returns the size of d if it is complete in the local cache.
	Local(d digest.Digest) (size int64, ok bool)
}

// Blob is one blob being served.
type Blob interface {
	Size() int64
	// Cached reports whether the blob was complete in the local cache when
	// opened.
	Cached() bool
	// NewReader streams the blob from offset, returning only verified
	// bytes, blocking until they arrive.
	NewReader(ctx context.Context, offset int64) (io.ReadCloser, error)
	Close() error
}

// Options are the mirror's collaborators.
type Options struct {
	// Blobs serves blob content; nil proxies blobs from the origin.
	Blobs Blobs
	// Client talks to the origin (default: one over NewTransport, with
	// the configured dial and response-header timeouts). It must not have
	// an overall Timeout: blob bodies stream for as long as they take.
	Client *http.Client
	Logger *slog.Logger
	// Registerer receives the mirror's metrics when not nil.
	Registerer prometheus.Registerer
	// Now is the clock of every TTL (default time.Now); tests advance
	// their own instead of sleeping.
	Now func() time.Time
	// Tokens verifies the origin's bearer tokens with its public keys
	// (the agent's, which also verify P2P capabilities); nil: none are.
	// It only tells whose a token is, for the record of the origin's
	// yeses kept for while it is down (tokenUser); it never lets a token
	// in while the origin answers.
	Tokens TokenVerifier
}

// TokenVerifier checks that a bearer token is one the origin issued for
// its service and has not expired, and returns its claims.
// *auth.Verifier implements it.
type TokenVerifier interface {
	VerifyToken(raw, service string) (*auth.Claims, error)
}

// The origin's decisions are small fixed-size records (a key of repository,
// digest and a credential hash, at most a few hundred bytes, and a number),
// so their caches are bounded by count: decisionEntries of AuthTTL's yeses
// (far more than one host pulls at once), offlineEntries of OfflineTTL's
// (the repositories and digests one host pulled in a day).
const (
	decisionEntries    = 16384
	offlineEntries     = 65536
	decisionEntryBytes = 1 << 10
)

// sizeOfDecision is what a decision's value adds to its key: nothing worth
// counting.
func sizeOfDecision[V any](V) int64 { return 0 }

// Server is the mirror. It is an http.Handler for /v2/ and the token
// endpoint (auth.TokenPath).
type Server struct {
	cfg     Config
	origin  *url.URL
	client  *http.Client
	blobs   Blobs
	tokens  TokenVerifier
	log     *slog.Logger
	metrics *metrics

	now func() time.Time

	// tags holds manifests by tag and tag lists for TagTTL; manifests
	// the manifests by digest, for good.
	tags      *ttlCache[*cachedResponse]
	manifests *ttlCache[*cachedResponse]
	// Kept for OfflineTTL, for while the origin is down (nil when off):
	// staleTags the last good answer for a tag, offline the origin's last
	// yes to (repository, credentials) (repoAuthKey).
	staleTags *ttlCache[*cachedResponse]
	offline   *ttlCache[struct{}]
	// present holds the digests the origin served or authorized in a
	// repository (presentKey), for OfflineTTL (AuthTTL if longer): which
	// repositories a cached blob may be read under.
	present *ttlCache[struct{}]
	// auth remembers the origin's recent yeses for AuthTTL: blob sizes by
	// (repository, digest, credentials) and repository reads (-1).
	auth    *ttlCache[int64]
	fetches singleflight.Group
	// downUntil (unix nanoseconds) is set for AuthTTL when the origin
	// could not be reached or answered 5xx: meanwhile content cached by
	// digest is served without asking it (see serveCachedBlob).
	downUntil atomic.Int64

	// capabilities are the P2P capabilities the origin returned with its
	// recent yeses to blob HEADs, by digest, for AuthTTL.
	capabilities *ttlCache[string]
	// service is the token service the origin names in its challenges
	// (nil until one is relayed): the audience of its tokens.
	service atomic.Pointer[string]
}

// New returns a mirror of cfg.Origin.
func New(cfg Config, opts Options) (*Server, error) {
	if cfg.Origin == "" {
		return nil, errors.New("mirror: no origin URL configured")
	}
	u, err := url.Parse(cfg.Origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("mirror: origin %q is not an http(s) URL", cfg.Origin)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	switch {
	case cfg.OriginTimeout <= 0:
		return nil, errors.New("mirror: originTimeout must be positive")
	case cfg.OriginDialTimeout <= 0:
		return nil, errors.New("mirror: originDialTimeout must be positive")
	case cfg.OriginHeaderTimeout <= 0:
		return nil, errors.New("mirror: originHeaderTimeout must be positive")
	case cfg.OfflineTTL < 0:
		return nil, errors.New("mirror: offlineTTL must not be negative")
	case cfg.TagCacheBytes <= 0, cfg.OfflineTagCacheBytes <= 0, cfg.ManifestCacheBytes <= 0:
		return nil, errors.New("mirror: tagCacheBytes, offlineTagCacheBytes and manifestCacheBytes must be positive")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	s := &Server{
		cfg:       cfg,
		origin:    u,
		client:    opts.Client,
		blobs:     opts.Blobs,
		tokens:    opts.Tokens,
		log:       opts.Logger,
		now:       now,
		tags:      newTTLCache(max(cfg.TagTTL, time.Nanosecond), math.MaxInt, cfg.TagCacheBytes, (*cachedResponse).size, now),
		manifests: newTTLCache(0, math.MaxInt, cfg.ManifestCacheBytes, (*cachedResponse).size, now),
		auth:      newTTLCache(max(cfg.AuthTTL, time.Nanosecond), decisionEntries, decisionEntries*decisionEntryBytes, sizeOfDecision[int64], now),
	}
	s.capabilities = newTTLCache(max(cfg.AuthTTL, time.Nanosecond), decisionEntries, decisionEntries*decisionEntryBytes,
		func(tok string) int64 { return int64(len(tok)) }, now)
	s.present = newTTLCache(max(cfg.OfflineTTL, cfg.AuthTTL, time.Nanosecond), offlineEntries, offlineEntries*decisionEntryBytes, sizeOfDecision[struct{}], now)
	if cfg.OfflineTTL > 0 {
		s.staleTags = newTTLCache(cfg.OfflineTTL, math.MaxInt, cfg.OfflineTagCacheBytes, (*cachedResponse).size, now)
		s.offline = newTTLCache(cfg.OfflineTTL, offlineEntries, offlineEntries*decisionEntryBytes, sizeOfDecision[struct{}], now)
	}
	caches := map[string]cacheSizer{"tags": s.tags, "manifests": s.manifests, "auth": s.auth, "capabilities": s.capabilities, "present": s.present}
	if cfg.OfflineTTL > 0 {
		caches["offline_tags"], caches["offline_auth"] = s.staleTags, s.offline
	}
	s.metrics = newMetrics(opts.Registerer, caches)
	if s.client == nil {
		s.client = &http.Client{Transport: NewTransport(cfg, nil)}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// ServeHTTP answers the registry API's pull side and the token endpoint.
// It must see the request as the client sent it: behind net/http's
// ServeMux a path with dot segments or doubled slashes would be answered
// with a redirect to the cleaned path instead of the 400 parseRoute gives
// it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var rt route
	var perr *ociapi.Error
	if strings.HasPrefix(r.URL.EscapedPath(), PrefetchPrefix) {
		rt.kind = routePrefetch
	} else {
		rt, perr = parseRoute(r.URL.EscapedPath())
	}
	// Every answer goes out through rec, so no challenge the origin sent
	// leaves naming the origin's realm.
	rec := ociapi.NewRecorder(w)
	rec.BeforeHeader = func(h http.Header) { s.localChallenges(h, r) }
	defer func() {
		// A panic (http.ErrAbortHandler on a stream cut short) is still
		// counted before it propagates.
		s.metrics.observe(rt.kind, r.Method, rec.Status(), rec.Bytes(), time.Since(start))
	}()
	rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if perr != nil {
		s.writeError(rec, r, perr)
		return
	}
	if rt.kind == routePrefetch {
		s.servePrefetch(rec, r)
		return
	}
	if rt.kind == routeToken {
		s.serveToken(rec, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.writeError(rec, r, s.errPush(r.Method))
		return
	}
	if rt.kind == routeUpload {
		s.writeError(rec, r, s.errPush(r.Method))
		return
	}
	if err := rt.validate(); err != nil {
		s.writeError(rec, r, err)
		return
	}
	switch rt.kind {
	case routeTags:
		s.serveTags(rec, r, rt.name)
	case routeManifest:
		s.serveManifest(rec, r, rt.name, rt.ref)
	case routeBlob:
		s.serveBlob(rec, r, rt.name, rt.ref)
	default: // ping, catalog, referrers, other
		s.proxy(rec, r)
	}
}

// errPush is the answer to every write: the mirror is read-only, and the
// person pushing needs to know where to push instead.
func (s *Server) errPush(method string) *ociapi.Error {
	return ociapi.Errorf(http.StatusMethodNotAllowed, ociapi.CodeUnsupported,
		"this is a read-only Shoal mirror: %s is not supported here; push to the origin registry %s instead",
		method, s.origin.Redacted())
}

// proxy passes GET/HEAD of the API root, the catalog, referrers and other
// small endpoints to the origin unchanged (less containerd's ns query).
func (s *Server) proxy(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.OriginTimeout)
	defer cancel()
	path := r.URL.EscapedPath()
	if path == "/v2" {
		path = "/v2/"
	}
	resp, err := s.originRequest(ctx, r.Method, path, upstreamQuery(r), nil, r, nil)
	if e, gone := s.originFailure(r, resp, err, path); e != nil {
		if !gone {
			s.originDownAnswer(w, r, path, e)
		}
		return
	}
	defer resp.Body.Close()
	s.relay(w, r, resp)
}

// originDownAnswer answers a proxied request the origin could not. The
// API root is answered here, 200: dockerd pings it before every pull and
// gives up on a mirror whose ping fails, so without this it would not pull
// even what this agent holds (manifests by digest, blobs, recent tags) while
// the origin is down. Anything else gets the origin error.
func (s *Server) originDownAnswer(w http.ResponseWriter, r *http.Request, path string, ae *ociapi.Error) {
	if path != "/v2/" {
		s.writeError(w, r, ae)
		return
	}
	s.log.Warn("origin unavailable: /v2/ answered by the mirror so that cached content can be pulled", "err", ae)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, "{}")
	}
}

// upstreamQuery is the client's query without containerd's ns parameter,
// which names the registry the client thinks it is pulling from: the
// mirror serves one origin whatever it says.
func upstreamQuery(r *http.Request) url.Values {
	q := r.URL.Query()
	q.Del("ns")
	return q
}
