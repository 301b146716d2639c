// Package gcs is the storage driver for Google Cloud Storage, written on the
// cloud's own Go SDK (cloud.google.com/go/storage) rather than taken from the
// reference registry: the reference gcs driver starts its resumable uploads
// at the fixed host www.googleapis.com and asks for Google credentials when
// it opens, so it cannot be pointed at an emulator or a private endpoint, and
// so could not be tested here (docs/storage.md). The SDK honours both a
// custom endpoint and STORAGE_EMULATOR_HOST.
//
// The on-storage layout is registry:2's: object names are the prefix
// followed by registry:2's paths, as the reference gcs driver names them.
//
// Credentials never appear in the URL: they are Google's Application
// Default Credentials (GOOGLE_APPLICATION_CREDENTIALS naming a service
// account or workload identity federation file, gcloud's login, or the
// metadata server of GCE and GKE workload identity). An endpoint on plain
// http:// is an emulator and gets no credentials, since a token must not
// cross the network in clear text.
//
// GCS objects cannot be appended to. Writer(append=true) on an existing
// object streams the new bytes to a temporary object beside it, named
// "<name>~append-<random>" (a name no storage path can have, hidden from
// List and Walk), and, at Commit or Close, composes the old object and the new bytes into
// the object in one step, on the condition that the object is still the
// generation the writer started from. So a committed file can be continued
// from any node, and a concurrent change is an error rather than lost data.
package gcs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"golang.org/x/sync/errgroup"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	shoalstorage "github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore"
)

// DriverName is the name in errors.
const DriverName = "gcs"

// appendSuffix marks the temporary object of an append, which sits beside
// the object it continues: "~" cannot occur in a storage path
// (storage.PathRegexp), so it never collides with stored data. An object
// left by a process that died mid-append lives in the same directory as
// the upload's part, so it goes when the upload session's directory is
// deleted (the closing PUT, a cancelled upload, GC's purge of abandoned
// sessions).
const appendSuffix = "~append-"

const contentType = "application/octet-stream"

// Config says which bucket the driver uses and how it reaches it. ParseURL
// builds one from a storage URL.
type Config struct {
	// Bucket is the bucket's name. It must exist: the driver never creates
	// buckets, as registry:2's does not.
	Bucket string
	// Prefix is the object name prefix under which every path is kept, as
	// registry:2's rootdirectory. Empty: the bucket's root.
	Prefix string
	// Endpoint is the JSON API's base URL, such as http://127.0.0.1:4443 for
	// fake-gcs-server; empty means Google's (or STORAGE_EMULATOR_HOST when
	// set). On http:// the driver sends no credentials.
	Endpoint string
	// ChunkSize is the size of the chunks of a resumable upload; a writer
	// holds one in memory. Default 16 MiB (the SDK's and registry:2's).
	ChunkSize int
	// MaxAttempts bounds the tries of one request that failed with a 5xx,
	// a 429 or a broken connection, with backoff from 100 ms up to 2 s
	// between them, so that an outage becomes an error (a 503 from the
	// origin) within seconds rather than the SDK's default of retrying
	// until the request's context ends. Default 4.
	MaxAttempts int
	// Redirect makes the origin answer an authorized blob GET with a 307
	// to a V4 signed URL of the object (valid 20 minutes), so the bytes
	// come from GCS rather than through the origin. Default false.
	Redirect bool
	// Reads sizes the ranged GETs of a large read (storage URL parameters
	// readRangeSize and readRanges; docs/storage.md).
	Reads objectstore.Reads
}

// DefaultConfig returns the defaults of the tuning fields.
func DefaultConfig() Config {
	return Config{ChunkSize: 16 << 20, MaxAttempts: 4}
}

// ParseURL reads a storage URL of the form
//
//	gs://BUCKET/PREFIX?endpoint=http://127.0.0.1:4443
//
// Further query parameters: chunkSize (bytes), redirect, readRangeSize and
// readRanges (objectstore.Reads). Unknown parameters are an error, and so
// are credentials in the URL.
func ParseURL(u *url.URL) (Config, error) {
	if u.User != nil {
		return Config{}, errors.New("gs storage URL: credentials never go in the URL; use Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity)")
	}
	cfg := DefaultConfig()
	cfg.Bucket, cfg.Prefix = u.Host, strings.Trim(u.Path, "/")
	if cfg.Bucket == "" {
		return Config{}, fmt.Errorf("gs storage URL %q: no bucket; write gs://BUCKET/PREFIX", u.Redacted())
	}
	for key, vals := range u.Query() {
		v := vals[len(vals)-1]
		var err error
		switch key {
		case "endpoint":
			cfg.Endpoint = v
		case "chunkSize":
			cfg.ChunkSize, err = strconv.Atoi(v)
		case "redirect":
			cfg.Redirect, err = strconv.ParseBool(v)
		default:
			var ok bool
			if ok, err = cfg.Reads.Parse(key, v); !ok {
				return Config{}, fmt.Errorf("gs storage URL: unknown parameter %q; known: endpoint, chunkSize, redirect, "+objectstore.ReadParams, key)
			}
		}
		if err != nil {
			return Config{}, fmt.Errorf("gs storage URL: parameter %s=%q: %w", key, v, err)
		}
	}
	return cfg, nil
}

// Open returns a driver for a storage URL (see ParseURL).
func Open(ctx context.Context, u *url.URL) (shoalstorage.Driver, error) {
	cfg, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	return New(ctx, cfg)
}

// New returns a driver for cfg. It does not contact the store: a wrong
// bucket or missing credentials show at the first request.
func New(ctx context.Context, cfg Config) (shoalstorage.Driver, error) {
	def := DefaultConfig()
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = def.ChunkSize
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = def.MaxAttempts
	}
	if cfg.Bucket == "" {
		return nil, errors.New("gcs: no bucket")
	}
	store := fmt.Sprintf("GCS bucket %q", cfg.Bucket)
	// JSON reads: the XML API's host is derived from the endpoint in ways
	// emulators do not all follow; the JSON API serves both.
	opts := []option.ClientOption{storage.WithJSONReads()}
	anonymous := os.Getenv("STORAGE_EMULATOR_HOST") != ""
	if cfg.Endpoint != "" {
		e, err := url.Parse(cfg.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return nil, fmt.Errorf("%s: endpoint %q is not an http:// or https:// URL", store, cfg.Endpoint)
		}
		anonymous = e.Scheme == "http"
		opts = append(opts, option.WithEndpoint(strings.TrimRight(cfg.Endpoint, "/")+"/storage/v1/"))
		store = fmt.Sprintf("GCS bucket %q at %s", cfg.Bucket, cfg.Endpoint)
	}
	if anonymous {
		opts = append(opts, option.WithoutAuthentication())
	}
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", store, err)
	}
	// Every write of the driver is safe to repeat (the same bytes to the
	// same name, or a compose guarded by a generation precondition), so
	// all requests may be retried, a bounded number of times.
	client.SetRetry(
		storage.WithPolicy(storage.RetryAlways),
		storage.WithMaxAttempts(cfg.MaxAttempts),
		storage.WithBackoff(gax.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2}),
	)
	prefix := cfg.Prefix
	if prefix != "" {
		prefix += "/"
	}
	d := &driver{bucket: client.Bucket(cfg.Bucket), prefix: prefix, chunkSize: cfg.ChunkSize}
	if cfg.Redirect && anonymous {
		// No credentials for the requests, so none the SDK could sign
		// with: the signing key comes from a service account key file.
		d.signer, err = keyFileSigner(os.Getenv("GOOGLE_APPLICATION_CREDENTIALS"))
		if err != nil {
			return nil, fmt.Errorf("%s: redirect=true on a plain-HTTP endpoint: %w", store, err)
		}
		d.signer.Insecure = true
	}
	return withCapabilities(objectstore.Wrap(d, objectstore.Options{Name: DriverName, Store: store, IsOutage: isOutage, Redirect: cfg.Redirect, Ranges: d, Reads: cfg.Reads}), d), nil
}

// driver implements the contract on the SDK; objectstore.Wrap maps its
// errors.
type driver struct {
	bucket    *storage.BucketHandle
	prefix    string // "" or ending in "/"
	chunkSize int
	// signer holds what RedirectURL signs with when the client has no
	// credentials (an emulator); empty: the client's own credentials.
	signer storage.SignedURLOptions
}

func (d *driver) Name() string { return DriverName }

// key is the object name of path p ("/a/b" -> prefix+"a/b").
func (d *driver) key(p string) string { return d.prefix + strings.TrimPrefix(p, "/") }

// dirKey is the name prefix of everything under directory p.
func (d *driver) dirKey(p string) string {
	if p == "/" {
		return d.prefix
	}
	return d.key(p) + "/"
}

// path is the storage path of object name key.
func (d *driver) path(key string) string {
	return "/" + strings.TrimSuffix(strings.TrimPrefix(key, d.prefix), "/")
}

// hidden reports the driver's own temporary names: a last component with a
// "~", which no storage path has. That covers "/.shoal~tmp", where earlier
// versions staged appends.
func (d *driver) hidden(p string) bool {
	return strings.Contains(p[strings.LastIndexByte(p, '/')+1:], "~")
}

func check(p string) error { return objectstore.CheckPath(p, DriverName) }

func notFound(err error) bool {
	var gerr *googleapi.Error
	return errors.Is(err, storage.ErrObjectNotExist) || (errors.As(err, &gerr) && gerr.Code == http.StatusNotFound)
}

func (d *driver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if err := check(p); err != nil {
		return nil, err
	}
	r, err := d.bucket.Object(d.key(p)).NewReader(ctx)
	if notFound(err) {
		return nil, shoalstorage.PathNotFoundError{Path: p, DriverName: DriverName}
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// PutContent uploads content in one request; the object changes atomically.
func (d *driver) PutContent(ctx context.Context, p string, content []byte) error {
	if err := check(p); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // before Close, abandons the upload
	w := d.bucket.Object(d.key(p)).NewWriter(ctx)
	w.ContentType = contentType
	w.ChunkSize = 0 // one request, no resumable session
	if _, err := w.Write(content); err != nil {
		return err
	}
	return w.Close()
}

func (d *driver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	if err := check(p); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, shoalstorage.InvalidOffsetError{Path: p, Offset: offset, DriverName: DriverName}
	}
	obj := d.bucket.Object(d.key(p))
	r, err := obj.NewRangeReader(ctx, offset, -1)
	var gerr *googleapi.Error
	switch {
	case notFound(err):
		return nil, shoalstorage.PathNotFoundError{Path: p, DriverName: DriverName}
	case errors.As(err, &gerr) && gerr.Code == http.StatusRequestedRangeNotSatisfiable:
		attrs, err := obj.Attrs(ctx)
		if notFound(err) {
			return nil, shoalstorage.PathNotFoundError{Path: p, DriverName: DriverName}
		}
		if err != nil {
			return nil, err
		}
		if offset == attrs.Size {
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, shoalstorage.InvalidOffsetError{Path: p, Offset: offset, DriverName: DriverName}
	case err != nil:
		return nil, err
	}
	if offset > 0 && r.Attrs.Size <= offset {
		// Some servers answer an out-of-range read with the object
		// rather than 416; the size tells.
		r.Close()
		if offset == r.Attrs.Size {
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, shoalstorage.InvalidOffsetError{Path: p, Offset: offset, DriverName: DriverName}
	}
	return r, nil
}

// OpenRange reads n bytes of the object at p from off, on condition that it
// is still generation version when version is set
// (objectstore.RangeOpener).
func (d *driver) OpenRange(ctx context.Context, p string, off, n int64, version string) (io.ReadCloser, objectstore.Object, error) {
	obj := d.bucket.Object(d.key(p))
	if version != "" {
		gen, err := strconv.ParseInt(version, 10, 64)
		if err != nil {
			return nil, objectstore.Object{}, fmt.Errorf("generation %q: %w", version, err)
		}
		obj = obj.If(storage.Conditions{GenerationMatch: gen})
	}
	r, err := obj.NewRangeReader(ctx, off, n)
	if err != nil {
		var gerr *googleapi.Error
		code := 0
		switch {
		case notFound(err):
			code = http.StatusNotFound
		case errors.As(err, &gerr):
			code = gerr.Code
		}
		return nil, objectstore.Object{}, objectstore.RangeError(p, DriverName, version, code, err)
	}
	gen := strconv.FormatInt(r.Attrs.Generation, 10)
	switch {
	case r.Attrs.Size <= off && off > 0:
		r.Close() // a server that answered with the object rather than 416
		return nil, objectstore.Object{}, objectstore.ErrRangeNotSatisfiable
	case version != "" && gen != version:
		// fake-gcs-server does not apply the precondition to reads.
		r.Close()
		return nil, objectstore.Object{}, fmt.Errorf("%w: generation %s, then %s", objectstore.ErrObjectChanged, version, gen)
	}
	return r, objectstore.Object{Size: r.Attrs.Size, Version: gen}, nil
}

func (d *driver) Stat(ctx context.Context, p string) (shoalstorage.FileInfo, error) {
	if p != "/" {
		if err := check(p); err != nil {
			return nil, err
		}
		attrs, err := d.bucket.Object(d.key(p)).Attrs(ctx)
		if err == nil {
			return shoalstorage.FileInfoInternal{FileInfoFields: shoalstorage.FileInfoFields{
				Path: p, Size: attrs.Size, ModTime: attrs.Updated}}, nil
		}
		if !notFound(err) {
			return nil, err
		}
	}
	q := &storage.Query{Prefix: d.dirKey(p)}
	if err := q.SetAttrSelection([]string{"Name"}); err != nil {
		return nil, err
	}
	it := d.bucket.Objects(ctx, q)
	it.PageInfo().MaxSize = 1
	_, err := it.Next()
	switch {
	case err == nil, p == "/" && errors.Is(err, iterator.Done):
		return shoalstorage.FileInfoInternal{FileInfoFields: shoalstorage.FileInfoFields{Path: p, IsDir: true}}, nil
	case errors.Is(err, iterator.Done):
		return nil, shoalstorage.PathNotFoundError{Path: p, DriverName: DriverName}
	default:
		return nil, err
	}
}

// readDir lists directory p's direct children with their FileInfo, in one
// delimited listing (a request per 1,000 entries).
func (d *driver) readDir(ctx context.Context, p string) ([]shoalstorage.FileInfo, error) {
	if p != "/" {
		if err := check(p); err != nil {
			return nil, err
		}
	}
	q := &storage.Query{Prefix: d.dirKey(p), Delimiter: "/"}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Updated"}); err != nil {
		return nil, err
	}
	var out []shoalstorage.FileInfo
	it := d.bucket.Objects(ctx, q)
	for {
		o, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, err
		}
		var fi shoalstorage.FileInfoFields
		switch {
		case o.Prefix != "":
			fi = shoalstorage.FileInfoFields{Path: d.path(o.Prefix), IsDir: true}
		case strings.HasSuffix(o.Name, "/"):
			continue // a folder placeholder some tools create
		default:
			fi = shoalstorage.FileInfoFields{Path: d.path(o.Name), Size: o.Size, ModTime: o.Updated}
		}
		if d.hidden(fi.Path) {
			continue
		}
		out = append(out, shoalstorage.FileInfoInternal{FileInfoFields: fi})
	}
	if p != "/" && len(out) == 0 {
		return nil, shoalstorage.PathNotFoundError{Path: p, DriverName: DriverName}
	}
	return out, nil
}

func (d *driver) List(ctx context.Context, p string) ([]string, error) {
	fis, err := d.readDir(ctx, p)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(fis))
	for i, fi := range fis {
		out[i] = fi.Path()
	}
	return out, nil
}

func (d *driver) Walk(ctx context.Context, from string, f shoalstorage.WalkFn, options ...func(*shoalstorage.WalkOptions)) error {
	return shoalstorage.WalkDir(ctx, from, d.readDir, f, options...)
}

// Move copies src to dst on the server (a rewrite, which the SDK repeats
// for large objects until done) and deletes src. dst changes in one step.
func (d *driver) Move(ctx context.Context, src, dst string) error {
	if err := check(src); err != nil {
		return err
	}
	if err := check(dst); err != nil {
		return err
	}
	from := d.bucket.Object(d.key(src))
	c := d.bucket.Object(d.key(dst)).CopierFrom(from)
	c.ContentType = contentType
	if _, err := c.Run(ctx); err != nil {
		if notFound(err) {
			return shoalstorage.PathNotFoundError{Path: src, DriverName: DriverName}
		}
		return err
	}
	if err := from.Delete(ctx); err != nil && !notFound(err) {
		return fmt.Errorf("deleting %s after copying it to %s: %w", src, dst, err)
	}
	return nil
}

// deleteConcurrency bounds the deletes in flight for one Delete: GCS has no
// batch delete in the JSON API the SDK uses, and an upload directory or a
// repository holds many objects.
const deleteConcurrency = 16

// Delete removes the object at p and every object under p/.
func (d *driver) Delete(ctx context.Context, p string) error {
	if err := check(p); err != nil {
		return err
	}
	keys := []string{d.key(p)}
	q := &storage.Query{Prefix: d.dirKey(p)}
	if err := q.SetAttrSelection([]string{"Name"}); err != nil {
		return err
	}
	it := d.bucket.Objects(ctx, q)
	for {
		o, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return err
		}
		keys = append(keys, o.Name)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(deleteConcurrency)
	deleted := make([]bool, len(keys))
	for i, k := range keys {
		g.Go(func() error {
			err := d.bucket.Object(k).Delete(gctx)
			if notFound(err) {
				return nil
			}
			deleted[i] = err == nil
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, ok := range deleted {
		if ok {
			return nil
		}
	}
	return shoalstorage.PathNotFoundError{Path: p, DriverName: DriverName}
}

// RedirectURL returns a V4 signed URL for a GET of p valid for 20 minutes
// (registry:2's duration), on the client's endpoint. The SDK signs with the
// credentials' key, or through the IAM signBlob API on GCE and under
// workload identity; on a plain-HTTP endpoint with the key file's key.
func (d *driver) RedirectURL(r *http.Request, p string) (string, error) {
	if r.Method != http.MethodGet {
		return "", nil
	}
	opts := d.signer
	opts.Method = http.MethodGet
	opts.Expires = time.Now().Add(20 * time.Minute)
	opts.Scheme = storage.SigningSchemeV4
	return d.bucket.SignedURL(d.key(p), &opts)
}

// keyFileSigner returns signing options with the service account and
// private key of a service account key file (the JSON that
// GOOGLE_APPLICATION_CREDENTIALS names).
func keyFileSigner(file string) (storage.SignedURLOptions, error) {
	if file == "" {
		return storage.SignedURLOptions{}, errors.New("signing URLs needs a service account key: set GOOGLE_APPLICATION_CREDENTIALS to its JSON file")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return storage.SignedURLOptions{}, fmt.Errorf("reading the service account key to sign URLs with: %w", err)
	}
	var key struct {
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if err := json.Unmarshal(b, &key); err != nil || key.ClientEmail == "" || key.PrivateKey == "" {
		return storage.SignedURLOptions{}, fmt.Errorf("%s is not a service account key (client_email and private_key): %v", file, err)
	}
	return storage.SignedURLOptions{GoogleAccessID: key.ClientEmail, PrivateKey: []byte(key.PrivateKey)}, nil
}

// Writer streams to the object (a resumable upload in ChunkSize pieces);
// see the package documentation for append.
func (d *driver) Writer(ctx context.Context, p string, appendMode bool) (shoalstorage.FileWriter, error) {
	if err := check(p); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &writer{d: d, ctx: ctx, cancel: cancel, path: p, dst: d.bucket.Object(d.key(p))}
	w.target = w.dst
	if appendMode {
		attrs, err := w.dst.Attrs(ctx)
		switch {
		case notFound(err):
			// Nothing to continue: as on a filesystem, append creates.
		case err != nil:
			cancel()
			return nil, err
		case attrs.Size == 0:
			// Nothing worth composing with: replace the empty object,
			// if it is still the one seen.
			w.target = w.dst.If(storage.Conditions{GenerationMatch: attrs.Generation})
		default:
			w.base, w.baseGen = attrs.Size, attrs.Generation
			var b [12]byte
			_, _ = rand.Read(b[:])
			w.target = d.bucket.Object(d.key(p) + appendSuffix + hex.EncodeToString(b[:]))
		}
	}
	return w, nil
}

type writer struct {
	d      *driver
	ctx    context.Context
	cancel context.CancelFunc // aborts the upload
	path   string
	dst    *storage.ObjectHandle
	// target receives the bytes: dst, or a temporary object when
	// continuing an existing one (base > 0) of generation baseGen.
	target  *storage.ObjectHandle
	base    int64
	baseGen int64
	w       *storage.Writer // opened at the first byte
	written int64

	closed, committed, cancelled bool
}

func (w *writer) open() {
	w.w = w.target.NewWriter(w.ctx)
	w.w.ContentType = contentType
	w.w.ChunkSize = w.d.chunkSize
}

func (w *writer) Write(p []byte) (int, error) {
	switch {
	case w.closed:
		return 0, fmt.Errorf("gcs: writing %s: writer already closed", w.path)
	case w.committed:
		return 0, fmt.Errorf("gcs: writing %s: writer already committed", w.path)
	case w.cancelled:
		return 0, fmt.Errorf("gcs: writing %s: writer already cancelled", w.path)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.w == nil {
		w.open()
	}
	n, err := w.w.Write(p)
	w.written += int64(n)
	return n, err
}

func (w *writer) Size() int64 { return w.base + w.written }

// finish makes what was written the object's content: finalizes the upload,
// and when continuing an object composes it with the new bytes.
func (w *writer) finish(ctx context.Context) error {
	defer w.cancel()
	if w.w == nil {
		if w.base > 0 {
			return nil // appended nothing
		}
		w.open() // an empty file is a file too
	}
	if err := w.w.Close(); err != nil {
		return err
	}
	if w.base == 0 {
		return nil
	}
	tmp := w.target
	defer func() { _ = tmp.Delete(context.WithoutCancel(ctx)) }()
	c := w.dst.If(storage.Conditions{GenerationMatch: w.baseGen}).ComposerFrom(w.dst.Generation(w.baseGen), tmp)
	c.ContentType = contentType
	if _, err := c.Run(ctx); err != nil {
		var gerr *googleapi.Error
		if errors.As(err, &gerr) && gerr.Code == http.StatusPreconditionFailed {
			return fmt.Errorf("gcs: appending to %s: it changed since the writer opened it (another writer?): %w", w.path, err)
		}
		return err
	}
	return nil
}

// Commit makes the content visible.
func (w *writer) Commit(ctx context.Context) error {
	switch {
	case w.closed:
		return fmt.Errorf("gcs: committing %s: writer already closed", w.path)
	case w.committed:
		return fmt.Errorf("gcs: committing %s: already committed", w.path)
	case w.cancelled:
		return fmt.Errorf("gcs: committing %s: writer already cancelled", w.path)
	}
	w.committed = true
	return w.finish(ctx)
}

// Close without Commit stores what was written too, so that a later
// Writer(append=true) continues from it, as the contract's other drivers do.
func (w *writer) Close() error {
	if w.closed {
		return fmt.Errorf("gcs: closing writer for %s: already closed", w.path)
	}
	w.closed = true
	if w.committed || w.cancelled {
		return nil
	}
	return w.finish(w.ctx)
}

// Cancel aborts the upload and removes what it wrote: the temporary object
// of an append (the object it continues stays as it was), or the object.
func (w *writer) Cancel(ctx context.Context) error {
	if w.closed {
		return fmt.Errorf("gcs: cancelling writer for %s: already closed", w.path)
	}
	w.cancelled, w.closed = true, true
	w.cancel()
	if w.w != nil {
		_ = w.w.Close() // returns the cancellation
	}
	if err := w.target.Delete(ctx); err != nil && !notFound(err) {
		return err
	}
	return nil
}

// isOutage reports whether an SDK error says that GCS could not serve the
// request now (after the driver's bounded retries).
func isOutage(err error) bool {
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		return objectstore.IsOutageStatus(gerr.Code)
	}
	return false
}
