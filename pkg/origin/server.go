// Package origin is Shoal's origin: a registry that serves the Docker
// Registry v2 / OCI Distribution API on a storage driver, in registry:2's
// on-storage layout.
package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/internal/glob"
	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// Config tunes an origin. The zero value is not useful: start from
// DefaultConfig.
type Config struct {
	// DeleteEnabled allows DELETE of manifests, tags and blobs. On by
	// default, unlike registry:2: Shoal's retention needs deletes anyway.
	DeleteEnabled bool `yaml:"deleteEnabled"`
	// MaxManifestSize is the largest manifest accepted, in bytes. 4 MiB, the
	// limit the distribution spec suggests registries enforce at least.
	MaxManifestSize int64 `yaml:"maxManifestSize"`
	// AllowSparseManifests accepts manifests that reference blobs or child
	// manifests not pushed to the repository. Off by default: a sparse image
	// cannot be pulled whole. Mirrors of partial content (one platform of a
	// multi-platform index) turn it on.
	AllowSparseManifests bool `yaml:"allowSparseManifests"`
	// AnonymousMount lets POST ?mount=<digest> without from= link a blob
	// that exists in any repository. Knowing a digest proves nothing about
	// the right to read it, so turn this off where repositories are private.
	AnonymousMount bool `yaml:"anonymousMount"`
	// ManifestCacheEntries is how many manifests (each at most 64 KiB) are
	// kept in memory by digest.
	ManifestCacheEntries int `yaml:"manifestCacheEntries"`
	// BodyTimeout cuts an upload or manifest body that sends nothing for
	// this long (a progress deadline, pushed forward as bytes arrive, not a
	// limit on the whole body). The chunk is not stored and the session
	// stays where it was, so the client can resume. 60s, nginx's
	// client_body_timeout: far longer than an honest client pauses, short
	// enough that a stalled one does not hold a connection for good. 0
	// turns it off.
	BodyTimeout time.Duration `yaml:"bodyTimeout"`
	// MaxManifestReferences is the most descriptors (config and layers, or
	// child manifests) a manifest may list; beyond, it is refused before
	// any storage call, since each reference costs storage calls to check.
	// 1024: eight times the 128 layers an image can have at most (overlay's
	// mount limit), room for large artifacts and indexes.
	MaxManifestReferences int `yaml:"maxManifestReferences"`
	// ManifestCheckConcurrency is how many of one manifest's references are
	// checked in storage at once. 16: a manifest's checks take a few round
	// trips instead of one per layer, and no push takes the storage's
	// attention from everyone else's.
	ManifestCheckConcurrency int `yaml:"manifestCheckConcurrency"`
	// MaxManifestValidations is how many manifest pushes this node checks
	// and stores at once; beyond, 429 TOOMANYREQUESTS with Retry-After.
	// Each costs up to MaxManifestReferences storage calls, so this bounds
	// the load manifest pushes put on storage. 64.
	MaxManifestValidations int `yaml:"maxManifestValidations"`
	// CatalogTTL is how long the repository list that _catalog serves is
	// kept before the repository tree is walked again. Walking costs a
	// storage call per directory, so requests share one walk per TTL;
	// repositories this node creates are listed at once, those created
	// through other nodes within the TTL. 30s.
	CatalogTTL time.Duration `yaml:"catalogTTL"`
	// MaxCatalogEntries is the most repositories _catalog lists (and keeps
	// in memory); the walk stops there and says so in the log. 100000.
	MaxCatalogEntries int `yaml:"maxCatalogEntries"`
	// BlobSizeLimits cap the size of the blobs pushed to some repositories.
	// The first rule with a pattern matching the repository decides; none:
	// no limit. An upload is refused with 413 SIZE_INVALID as soon as its
	// Content-Length, Content-Range or the bytes received go past the
	// limit. Empty by default: how much a repository may hold is the
	// operator's decision.
	BlobSizeLimits []BlobSizeLimit `yaml:"blobSizeLimits"`
	// StorageTimeout bounds a metadata call to storage (stat, list, small
	// reads and writes, delete, opening a stream). A call without an answer
	// by then counts as an outage: the request gets 503, readiness turns
	// red, and calls fail at once, but for one probe a second, until
	// storage answers again. 10s: far beyond what these calls take on a
	// working HDFS or disk, and a namenode failover is over by then or
	// worth a 503. Streams and moves (an object store copies the blob) are
	// not timed, only failed fast while storage is out. 0 turns it off.
	StorageTimeout time.Duration `yaml:"storageTimeout"`
	// MaxUploadSessionsPerClient is the most upload sessions one client
	// (a user at an address, or an address for anonymous pushes; IPv6 by
	// /64) may have open on this node; past it, POST gets 429
	// TOOMANYREQUESTS with Retry-After. Each open session is a directory
	// in storage until it is finished, canceled or purged by GC, so a
	// client starting sessions without end would fill the storage
	// namespace. A session untouched through this node for an hour stops
	// counting, so abandoned ones do not lock a client out until GC purges
	// them. 256: a push opens a few at a time (dockerd five), which leaves
	// room for dozens of concurrent pushes from one build machine. 0 turns
	// the cap off.
	MaxUploadSessionsPerClient int `yaml:"maxUploadSessionsPerClient"`
}

// BlobSizeLimit caps the size of the blobs pushed to the repositories its
// patterns match.
type BlobSizeLimit struct {
	// Repositories are glob patterns over repository names, as in access
	// and retention rules: `*` within a path component, `**` across them.
	Repositories []string `yaml:"repositories"`
	// MaxBlobSize is the largest blob an upload to them may make, in bytes.
	MaxBlobSize int64 `yaml:"maxBlobSize"`
}

// Validate reports a rule that cannot be applied.
func (l BlobSizeLimit) Validate() error {
	if len(l.Repositories) == 0 {
		return errors.New("a blobSizeLimits rule has no repositories")
	}
	for _, p := range l.Repositories {
		if err := glob.Validate(p); err != nil {
			return fmt.Errorf("blobSizeLimits: %w", err)
		}
	}
	if l.MaxBlobSize <= 0 {
		return fmt.Errorf("blobSizeLimits %v: maxBlobSize must be positive", l.Repositories)
	}
	return nil
}

// DefaultConfig returns the settings `origin` runs with when nothing is
// configured.
func DefaultConfig() Config {
	return Config{
		DeleteEnabled:        true,
		MaxManifestSize:      4 << 20,
		AnonymousMount:       true,
		ManifestCacheEntries: 1024,
		BodyTimeout:          60 * time.Second,

		MaxManifestReferences:    1024,
		ManifestCheckConcurrency: 16,
		MaxManifestValidations:   64,
		CatalogTTL:               30 * time.Second,
		MaxCatalogEntries:        100000,
		StorageTimeout:           10 * time.Second,

		MaxUploadSessionsPerClient: 256,
	}
}

// Server serves the registry API. It is an http.Handler.
type Server struct {
	driver    storage.Driver
	cfg       Config
	log       *slog.Logger
	metrics   *metrics
	manifests *lru.Cache[digest.Digest, *cachedManifest]
	uploads   uploadSessions
	// openUploads counts each client's open sessions, for its cap.
	openUploads openUploads
	// validations holds a token per manifest push being checked.
	validations chan struct{}
	catalog     catalog
	// health is the storage breaker of driver (a guardedDriver).
	health *storageHealth
	// now is the clock of TTLs: time.Now, or a test's.
	now   func() time.Time
	mux   *http.ServeMux
	guard ReferenceGuard
	authz *auth.Authorizer // nil: access control off (SetAuthorizer)

	// p2p signs P2P capabilities; nil: none handed out (SetSigningKey).
	p2p *p2pSigner

	readyMu  sync.Mutex
	readyAt  time.Time
	readyErr error
}

// New returns an origin serving the registry API from driver. Metrics are
// registered with reg when it is not nil.
func New(driver storage.Driver, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.MaxManifestSize <= 0 {
		return nil, errors.New("origin: MaxManifestSize must be positive")
	}
	if cfg.ManifestCacheEntries <= 0 {
		cfg.ManifestCacheEntries = 1
	}
	for _, l := range cfg.BlobSizeLimits {
		if err := l.Validate(); err != nil {
			return nil, fmt.Errorf("origin: %w", err)
		}
	}
	if cfg.MaxCatalogEntries <= 0 {
		return nil, errors.New("origin: maxCatalogEntries must be positive")
	}
	if cfg.MaxManifestReferences <= 0 || cfg.ManifestCheckConcurrency <= 0 || cfg.MaxManifestValidations <= 0 {
		return nil, errors.New("origin: maxManifestReferences, manifestCheckConcurrency and maxManifestValidations must be positive")
	}
	cache, err := lru.New[digest.Digest, *cachedManifest](cfg.ManifestCacheEntries)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, manifests: cache, metrics: newMetrics(reg), now: time.Now,
		validations: make(chan struct{}, cfg.MaxManifestValidations)}
	s.health = &storageHealth{driver: driver.Name(), timeout: cfg.StorageTimeout, now: func() time.Time { return s.now() },
		log: log, metrics: s.metrics}
	s.driver = newGuardedDriver(driver, s.health)
	if reg != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_origin_upload_chunks_in_flight",
			Help: "Upload sessions with a chunk body being received on this node.",
		}, func() float64 { return float64(s.uploads.writers()) }))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_origin_upload_sessions_open",
			Help: "Upload sessions started on this node and not yet seen finished, counted against maxUploadSessionsPerClient.",
		}, func() float64 { return float64(s.openUploads.count()) }))
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("/readyz", s.serveReady)
	return s, nil
}

// ReferenceGuard is what keeps a push from losing a blob to a concurrent
// garbage collection (gc.Guard implements it). The origin calls Check after
// writing the links of a push and before acknowledging it; an error wrapping
// gc.ErrBeingCollected makes the client upload again.
type ReferenceGuard interface {
	Check(ctx context.Context, repo string, linked, referenced []digest.Digest) error
}

// SetReferenceGuard installs the guard of the node's garbage collector. Call
// it before serving.
func (s *Server) SetReferenceGuard(g ReferenceGuard) { s.guard = g }

func (s *Server) checkGuard(ctx context.Context, repo string, linked, referenced []digest.Digest) error {
	if s.guard == nil {
		return nil
	}
	return s.guard.Check(ctx, repo, linked, referenced)
}

// Handle mounts an extra handler (metrics, admin API) beside the registry API.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// ServeHTTP hands the registry API, and every path that is not canonical,
// to serveAPI as the client sent it: behind the ServeMux a path with dot
// segments or doubled slashes would get a 301 to its cleaned form, which
// may name another repository. The mux serves the rest (health, metrics,
// the token endpoint, keys).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/v2" || strings.HasPrefix(p, "/v2/") || !canonical(r.URL.EscapedPath()) {
		s.serveAPI(w, r)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		body, lift := s.watchBody(w, r, "other")
		r.Body = &deadlineBody{Reader: body, Closer: r.Body, lift: lift}
	}
	s.mux.ServeHTTP(w, r)
}

// serveReady answers 200 while storage answers. The probe result is kept
// for a second so that probes cannot load the namenode. While writes are
// failing the probe is a write, so that readiness comes back only once
// pushes can work again.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	s.readyMu.Lock()
	if now := s.now(); now.Sub(s.readyAt) >= time.Second || now.Before(s.readyAt) {
		// Bounded apart from storageTimeout, which may be off.
		ctx, cancel := context.WithTimeout(withProbe(r.Context()), 5*time.Second)
		s.readyErr = s.probeStorage(ctx)
		cancel()
		s.readyAt = now
	}
	err := s.readyErr
	s.readyMu.Unlock()
	if err != nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, fmt.Sprintf("storage %s not ready: %v", s.driver.Name(), err), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// readinessProbePath is the file the readiness probe writes while writes
// are failing, in Shoal's own prefix; every node writes the same one.
const readinessProbePath = shoalPrefix + "/readiness-probe"

func (s *Server) probeStorage(ctx context.Context) error {
	writesDown, _ := s.health.state()
	if writesDown {
		if err := s.driver.PutContent(ctx, readinessProbePath, []byte(s.now().UTC().Format(time.RFC3339))); err != nil {
			return err
		}
	} else if _, err := s.driver.List(ctx, "/"); err != nil && !isNotFound(err) {
		return err
	}
	_, err := s.health.state()
	return err
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := ociapi.NewRecorder(w)
	_, canonErr := ociapi.CanonicalPath(r.URL.EscapedPath())
	rt, ok := ociapi.ParseRoute(r.URL.Path)
	kind := rt.Kind
	switch {
	case canonErr != nil:
		kind = "invalid"
	case !ok:
		kind = "unknown"
	}
	defer func() {
		s.metrics.observe(kind, r.Method, rec.Status(), time.Since(start))
	}()
	rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if canonErr != nil {
		s.writeError(rec, r, canonErr)
		return
	}
	if !ok {
		s.writeError(rec, r, ociapi.Errorf(http.StatusNotFound, ociapi.CodeNameUnknown, "no registry API route for %s", ociapi.Quote(r.URL.Path)))
		return
	}
	if err := rt.Validate(); err != nil {
		s.writeError(rec, r, err)
		return
	}
	ar, err := s.authorize(rec, r, rt)
	if err != nil {
		s.writeError(rec, r, err)
		return
	}
	r = ar
	switch rt.Kind {
	case ociapi.Base:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			err = errMethod(r)
			break
		}
		err = writeJSON(rec, r, http.StatusOK, struct{}{})
	case ociapi.Catalog:
		err = s.handleCatalog(rec, r)
	case ociapi.Tags:
		err = s.handleTags(rec, r, rt)
	case ociapi.Manifest:
		err = s.handleManifest(rec, r, rt)
	case ociapi.Blob:
		err = s.handleBlob(rec, r, rt)
	case ociapi.Uploads:
		err = s.handleUploads(rec, r, rt)
	case ociapi.Upload:
		err = s.handleUpload(rec, r, rt)
	case ociapi.Referrers:
		err = s.handleReferrers(rec, r, rt)
	}
	if err != nil {
		if rec.Wrote() {
			s.log.Warn("request failed after the response started", "method", r.Method, "path", r.URL.Path, "err", err)
			return
		}
		s.writeError(rec, r, err)
	}
}

// internalError turns an unexpected error into what the client is told.
func (s *Server) internalError(err error) *ociapi.Error {
	switch {
	case errors.Is(err, storage.ErrUnavailable):
		return &ociapi.Error{Status: http.StatusServiceUnavailable, Code: ociapi.CodeUnavailable,
			Message: fmt.Sprintf("storage backend %s is unavailable; nothing was changed, retry later", s.driver.Name()), Cause: err}
	case errors.Is(err, context.Canceled):
		return &ociapi.Error{Status: 499, Code: ociapi.CodeUnknown, Message: "request canceled", Cause: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &ociapi.Error{Status: http.StatusServiceUnavailable, Code: ociapi.CodeUnavailable,
			Message: fmt.Sprintf("storage backend %s timed out; retry later", s.driver.Name()), Cause: err}
	}
	var inv storage.InvalidPathError
	if errors.As(err, &inv) {
		return &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodeNameInvalid, Message: "invalid path in request", Cause: err}
	}
	return &ociapi.Error{Status: http.StatusInternalServerError, Code: ociapi.CodeUnknown,
		Message: "internal error; the origin's log has the details", Cause: err}
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

// canonical reports whether an escaped request path passes
// ociapi.CanonicalPath.
func canonical(escaped string) bool {
	_, err := ociapi.CanonicalPath(escaped)
	return err == nil
}
