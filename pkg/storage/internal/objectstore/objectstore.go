// Package objectstore adapts a storage driver over an object store (S3, Azure
// Blob, GCS) to the points of Shoal's storage contract that object stores
// and the reference registry's drivers for them leave open:
//
//   - outages (a 5xx or throttling answer after the SDK's own bounded
//     retries, a refused or broken connection) wrap storage.ErrUnavailable
//     and name the store, so that the origin answers 503 and retries later;
//   - a Reader past the end of a file is an InvalidOffsetError (the reference
//     S3 and Azure drivers return an empty reader there);
//   - the root "/" is always a directory while the store answers, even in an
//     empty bucket (the origin's readiness check stats it);
//   - typed errors (PathNotFoundError and the like) carry the driver's name.
//
// Object stores have no directories: a "directory" is a key prefix. So,
// unlike on the filesystem, a file and a directory may share a name
// (PutContent("/a/b") succeeds when "/a" is a file), and Move moves files
// only. Shoal's code never relies on either (docs/storage.md).
package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// Options describes the store behind a wrapped driver.
type Options struct {
	// Name is the driver's name, in errors and metrics: "s3", "azure", "gcs".
	Name string
	// Store names the store in outage messages, for a person to act on:
	// `S3 bucket "b" at http://127.0.0.1:7070`.
	Store string
	// IsOutage reports whether an error of the store's SDK says that the
	// store could not serve the request now (5xx, throttling, a broken
	// connection), as opposed to a bad request. Connection failures the
	// standard library reports (net.Error, ECONNREFUSED, ...) count as
	// outages without it.
	IsOutage func(error) bool
	// Redirect lets RedirectURL hand out signed URLs of the store (the
	// storage URL's redirect=true), so that the origin answers a blob GET
	// with a redirect instead of the bytes. Default false: RedirectURL
	// returns "" and every byte goes through the origin.
	Redirect bool
	// Ranges lets Reader read a large object with ranged GETs in
	// parallel (ranged.go) when Reads.InFlight > 0; nil: one GET
	// through the wrapped driver.
	Ranges RangeOpener
	// Reads sizes them.
	Reads Reads
}

// Driver is a storage.Driver adapted by Wrap.
type Driver struct {
	inner storage.Driver
	opts  Options
}

var _ storage.Driver = (*Driver)(nil)

// Wrap adapts d, a driver over the object store that opts describes.
func Wrap(d storage.Driver, opts Options) *Driver {
	if opts.Reads.RangeSize <= 0 {
		opts.Reads.RangeSize = DefaultRangeSize
	}
	return &Driver{inner: d, opts: opts}
}

// Ranges returns the RangeOpener Reader reads large objects with, nil for
// none.
func (d *Driver) Ranges() RangeOpener { return d.opts.Ranges }

// Unwrap returns the wrapped driver.
func (d *Driver) Unwrap() storage.Driver { return d.inner }

// Name returns the driver's name.
func (d *Driver) Name() string { return d.opts.Name }

// CheckPath returns an InvalidPathError for p unless it is a storage path
// (storage.PathRegexp) without "." or ".." components: a key such as
// "a/../b" is literal on S3 but not on every S3-compatible store, and a
// filesystem driver refuses it, so no driver may accept it.
func CheckPath(p, driverName string) error {
	if !storage.PathRegexp.MatchString(p) {
		return storage.InvalidPathError{Path: p, DriverName: driverName}
	}
	for _, c := range strings.Split(p[1:], "/") {
		if c == "." || c == ".." {
			return storage.InvalidPathError{Path: p, DriverName: driverName}
		}
	}
	return nil
}

// check is CheckPath for this driver; "/" passes where rootAllowed.
func (d *Driver) check(p string, rootAllowed bool) error {
	if p == "/" && rootAllowed {
		return nil
	}
	return CheckPath(p, d.opts.Name)
}

// GetContent reads the whole file at p.
func (d *Driver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if err := d.check(p, false); err != nil {
		return nil, err
	}
	b, err := d.inner.GetContent(ctx, p)
	return b, d.mapErr("get", p, err)
}

// PutContent writes the file at p in one request, replacing it atomically.
func (d *Driver) PutContent(ctx context.Context, p string, content []byte) error {
	if err := d.check(p, false); err != nil {
		return err
	}
	return d.mapErr("put", p, d.inner.PutContent(ctx, p, content))
}

// Reader reads the file at p from offset on. At offset == size it is empty;
// past the end it is an InvalidOffsetError. The store's answer is read in
// growing reads (reader.go); with Reads.InFlight > 0, and where the store's
// driver offers them, a large object with ranged GETs in parallel
// (ranged.go).
func (d *Driver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	if err := d.check(p, false); err != nil {
		return nil, err
	}
	if d.opts.Ranges == nil || d.opts.Reads.InFlight <= 0 {
		return d.streamReader(ctx, p, offset)
	}
	if offset < 0 {
		return nil, storage.InvalidOffsetError{Path: p, Offset: offset, DriverName: d.opts.Name}
	}
	rctx, cancel := context.WithCancel(ctx)
	body, obj, err := d.opts.Ranges.OpenRange(rctx, p, offset, 2*d.opts.Reads.RangeSize, "")
	if errors.Is(err, ErrRangeNotSatisfiable) {
		// At or past the end, or an empty object: the one-GET path
		// tells which.
		cancel()
		return d.streamReader(ctx, p, offset)
	}
	if err != nil {
		cancel()
		return nil, d.mapErr("read", p, err)
	}
	open := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
		rc, o, err := d.opts.Ranges.OpenRange(ctx, p, off, n, obj.Version)
		if err == nil && o.Size != obj.Size {
			rc.Close()
			err = fmt.Errorf("%w: %d bytes, then %d", ErrObjectChanged, obj.Size, o.Size)
		}
		return rc, err
	}
	cfg := readConfig{rangeSize: d.opts.Reads.RangeSize, inFlight: d.opts.Reads.InFlight}
	return newRanged(rctx, cancel, body, offset, obj, cfg, open, func(err error) error { return d.mapErr("read", p, err) }), nil
}

// streamReader reads the file at p from offset on with one GET through the
// wrapped driver.
func (d *Driver) streamReader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	rc, err := d.inner.Reader(ctx, p, offset)
	if err != nil {
		return nil, d.mapErr("read", p, err)
	}
	r := newReader(rc, func(err error) error { return d.mapErr("read", p, err) })
	if offset == 0 {
		return r, nil
	}
	// The reference drivers answer an empty reader both at the end and
	// past it. Only an empty answer needs the size, so only then is the
	// extra Stat paid.
	if !r.empty() {
		return r, nil // data, or an error the first Read reports
	}
	fi, err := d.inner.Stat(ctx, p)
	if err != nil {
		r.Close()
		return nil, d.mapErr("stat", p, err)
	}
	if offset > fi.Size() {
		r.Close()
		return nil, storage.InvalidOffsetError{Path: p, Offset: offset, DriverName: d.opts.Name}
	}
	return r, nil
}

// Writer opens a writer for p; see the wrapped driver for what append can do
// on its store.
func (d *Driver) Writer(ctx context.Context, p string, appendMode bool) (storage.FileWriter, error) {
	if err := d.check(p, false); err != nil {
		return nil, err
	}
	w, err := d.inner.Writer(ctx, p, appendMode)
	if err != nil {
		return nil, d.mapErr("open writer", p, err)
	}
	return &writer{FileWriter: w, d: d, path: p, start: w.Size()}, nil
}

// writer holds the contract's end states, which the reference writers do
// not all keep (a Close after Cancel succeeds on them): after Close or
// Cancel nothing more is accepted; after Commit only Close, once.
type writer struct {
	storage.FileWriter
	d    *Driver
	path string
	// start and written give Size: the reference writers count only
	// what they have flushed to the store, not what they buffer.
	start, written int64

	closed, committed, cancelled bool
}

func (w *writer) Size() int64 { return w.start + w.written }

func (w *writer) ended(op string) error {
	switch {
	case w.closed:
		return fmt.Errorf("%s: %s %s: writer already closed", w.d.opts.Name, op, w.path)
	case w.cancelled:
		return fmt.Errorf("%s: %s %s: writer already cancelled", w.d.opts.Name, op, w.path)
	case w.committed:
		return fmt.Errorf("%s: %s %s: writer already committed", w.d.opts.Name, op, w.path)
	}
	return nil
}

func (w *writer) Write(p []byte) (int, error) {
	if err := w.ended("writing"); err != nil {
		return 0, err
	}
	n, err := w.FileWriter.Write(p)
	w.written += int64(n)
	return n, w.d.mapErr("write", w.path, err)
}

func (w *writer) Close() error {
	if w.closed || w.cancelled {
		return w.ended("closing")
	}
	w.closed = true
	return w.d.mapErr("close writer", w.path, w.FileWriter.Close())
}

func (w *writer) Commit(ctx context.Context) error {
	if err := w.ended("committing"); err != nil {
		return err
	}
	w.committed = true
	return w.d.mapErr("commit", w.path, w.FileWriter.Commit(ctx))
}

func (w *writer) Cancel(ctx context.Context) error {
	if err := w.ended("cancelling"); err != nil {
		return err
	}
	w.cancelled = true
	return w.d.mapErr("cancel", w.path, w.FileWriter.Cancel(ctx))
}

// Stat describes the file or directory at p. "/" is a directory whenever the
// store can be listed.
func (d *Driver) Stat(ctx context.Context, p string) (storage.FileInfo, error) {
	if err := d.check(p, true); err != nil {
		return nil, err
	}
	if p == "/" {
		if _, err := d.inner.List(ctx, "/"); err != nil {
			var notFound storage.PathNotFoundError
			if !errors.As(err, &notFound) {
				return nil, d.mapErr("stat", p, err)
			}
		}
		return storage.FileInfoInternal{FileInfoFields: storage.FileInfoFields{Path: "/", IsDir: true}}, nil
	}
	fi, err := d.inner.Stat(ctx, p)
	return fi, d.mapErr("stat", p, err)
}

// List returns the direct children of p.
func (d *Driver) List(ctx context.Context, p string) ([]string, error) {
	if err := d.check(p, true); err != nil {
		return nil, err
	}
	l, err := d.inner.List(ctx, p)
	return l, d.mapErr("list", p, err)
}

// Move copies the file src to dst and deletes src. dst appears whole, in
// one step: object stores make an object visible only when its write or
// copy has completed.
func (d *Driver) Move(ctx context.Context, src, dst string) error {
	if err := d.check(src, false); err != nil {
		return err
	}
	if err := d.check(dst, false); err != nil {
		return err
	}
	return d.mapErr("move", src+" to "+dst, d.inner.Move(ctx, src, dst))
}

// Delete removes the file at p, or everything under the prefix p.
func (d *Driver) Delete(ctx context.Context, p string) error {
	if err := d.check(p, false); err != nil {
		return err
	}
	return d.mapErr("delete", p, d.inner.Delete(ctx, p))
}

// RedirectURL returns a signed URL for a GET of the file at p, or "" when
// redirects are off (Options.Redirect) or r is not a GET: a HEAD is always
// answered by the origin itself, with the digest and the P2P capability
// that only it can give.
func (d *Driver) RedirectURL(r *http.Request, p string) (string, error) {
	if !d.opts.Redirect || r.Method != http.MethodGet {
		return "", nil
	}
	if err := d.check(p, false); err != nil {
		return "", err
	}
	u, err := d.inner.RedirectURL(r, p)
	return u, d.mapErr("sign URL for", p, err)
}

// Walk visits everything under from, as the wrapped driver walks it.
func (d *Driver) Walk(ctx context.Context, from string, f storage.WalkFn, options ...func(*storage.WalkOptions)) error {
	return d.mapErr("walk", from, d.inner.Walk(ctx, from, f, options...))
}

// mapErr turns an error of the wrapped driver into the contract's: typed
// errors bare (callers and the reference suite test their type) with this
// driver's name, outages wrapping storage.ErrUnavailable, the rest wrapped
// with what was being done.
func (d *Driver) mapErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	var (
		notFound    storage.PathNotFoundError
		invalid     storage.InvalidPathError
		offset      storage.InvalidOffsetError
		unsupported storage.ErrUnsupportedMethod
	)
	switch {
	case errors.As(err, &notFound):
		notFound.DriverName = d.opts.Name
		return notFound
	case errors.As(err, &invalid):
		invalid.DriverName = d.opts.Name
		return invalid
	case errors.As(err, &offset):
		offset.DriverName = d.opts.Name
		return offset
	case errors.As(err, &unsupported):
		unsupported.DriverName = d.opts.Name
		return unsupported
	case errors.Is(err, storage.ErrUnavailable):
		return err // already mapped (a Walk callback's own storage call)
	}
	// The reference drivers' base layer hides the cause in a
	// storage.Error, which does not unwrap.
	cause := err
	var de storage.Error
	if errors.As(err, &de) && de.Detail != nil {
		cause = de.Detail
	}
	if IsConnFailure(cause) || (d.opts.IsOutage != nil && d.opts.IsOutage(cause)) {
		return fmt.Errorf("%s %s %s: %s unavailable: %w: %w", d.opts.Name, op, p, d.opts.Store, storage.ErrUnavailable, cause)
	}
	return fmt.Errorf("%s %s %s: %w", d.opts.Name, op, p, cause)
}

// IsConnFailure reports whether err came from a refused, broken or timed-out
// connection rather than from an answer of the store.
func IsConnFailure(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false // the caller gave up; the store is not to blame
	}
	var nerr net.Error
	return errors.As(err, &nerr) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, net.ErrClosed)
}

// IsOutageStatus reports whether an HTTP status says "not now": a server
// error or throttling.
func IsOutageStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// OpenStaged checks p and stage, opens a staged writer of p with open
// (the store's driver makes it beside the wrapped driver) and gives it the
// end states, Size and error mapping of the writers Writer returns.
func (d *Driver) OpenStaged(p, stage string, open func() (storage.FileWriter, error)) (storage.FileWriter, error) {
	if err := d.check(p, false); err != nil {
		return nil, err
	}
	if err := d.check(stage, false); err != nil {
		return nil, err
	}
	w, err := open()
	if err != nil {
		return nil, d.mapErr("open staged writer", p, err)
	}
	return &writer{FileWriter: w, d: d, path: p, start: w.Size()}, nil
}
