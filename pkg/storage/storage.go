// Package storage defines the storage driver contract that every Shoal component
// stores its data through.
//
// The contract is the reference registry's (distribution/distribution
// registry/storage/driver): Shoal re-exports its interface and error types
// rather than copying them, so that every Shoal driver can be run through the
// reference driver test suite unchanged, and so that a site that already runs
// registry:2 sees the same semantics. The drivers live in sub-packages:
// inmemory (tests), filesystem (the embedded default), hdfs, and the object
// stores s3, azure and gcs; drivers.Open picks one by URL.
package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"

	driver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// Driver is the storage driver interface: GetContent, PutContent,
// Reader(offset), Writer(append) with Size/Cancel/Commit, Stat, List, Move,
// Delete, RedirectURL and Walk.
type Driver = driver.StorageDriver

// FileWriter is a writer returned by Driver.Writer. Content becomes readable
// only after Commit.
type FileWriter = driver.FileWriter

// FileInfo describes a stored file or directory.
type FileInfo = driver.FileInfo

// FileInfoFields and FileInfoInternal let drivers build FileInfo values.
type (
	FileInfoFields   = driver.FileInfoFields
	FileInfoInternal = driver.FileInfoInternal
)

// WalkFn is called for every file and directory visited by Driver.Walk.
type WalkFn = driver.WalkFn

// WalkOptions adjusts a walk.
type WalkOptions = driver.WalkOptions

// Errors that drivers return. Callers test for them with errors.As.
type (
	PathNotFoundError    = driver.PathNotFoundError
	InvalidPathError     = driver.InvalidPathError
	InvalidOffsetError   = driver.InvalidOffsetError
	ErrUnsupportedMethod = driver.ErrUnsupportedMethod
	Error                = driver.Error
)

// ErrSkipDir and ErrFilledBuffer steer Walk, as in the reference interface.
var (
	ErrSkipDir      = driver.ErrSkipDir
	ErrFilledBuffer = driver.ErrFilledBuffer
)

// PathRegexp is what every storage path must match.
var PathRegexp = driver.PathRegexp

// WalkFallback implements Walk on top of List and Stat, for drivers that
// have nothing faster.
var WalkFallback = driver.WalkFallback

// ErrUnavailable marks an error as an outage of the storage backend (a
// namenode that does not answer, a disk that went read-only), as opposed to
// a missing path or a bad request. Drivers wrap it (fmt.Errorf("...: %w",
// storage.ErrUnavailable)) so that callers can answer 503 and retry later.
var ErrUnavailable = errors.New("storage backend unavailable")

// ConditionalWriter is an optional capability of a Driver: small writes that
// take effect only if the file is still as the caller last saw it. The
// reference interface has no such write, and object stores have no
// rename-if-absent, so a lock kept in storage (GC's lease) is only safe
// against a racing writer where the driver offers this. Find it with
// ConditionalWriterOf.
//
// A version is an opaque, non-empty string that changes whenever the file is
// written: the ETag on S3 and Azure, the generation on GCS, a hash of the
// content on the filesystem and in memory (where a write of the same bytes
// therefore keeps the version; callers that need every write to count put a
// counter in the content, as the lease does).
type ConditionalWriter interface {
	// GetContentVersion reads the whole file at path and its version. A
	// missing file is a PathNotFoundError.
	GetContentVersion(ctx context.Context, path string) (content []byte, version string, err error)
	// PutContentIf writes content to path, whole and atomically, only if the
	// file's version is still ifVersion, or, with ifVersion "", only if
	// there is no file at path. Otherwise it writes nothing and returns an
	// error wrapping ErrConditionFailed. It returns the new version.
	PutContentIf(ctx context.Context, path string, content []byte, ifVersion string) (version string, err error)
}

// ErrConditionFailed is what PutContentIf wraps when the file was written
// (or created, or deleted) since the caller read it.
var ErrConditionFailed = errors.New("storage: conditional write refused: the file changed")

// ConditionalWriterOf returns d's conditional writes, looking through
// Instrument's wrapper, or false if d has none.
func ConditionalWriterOf(d Driver) (ConditionalWriter, bool) {
	if in, ok := d.(*instrumented); ok {
		d = in.Driver
	}
	c, ok := d.(ConditionalWriter)
	return c, ok
}

// WithConditionalWriter returns d offering c's conditional writes, for a
// driver whose conditional writes are made by a client beside it (the object
// stores, whose base drivers are the reference registry's).
func WithConditionalWriter(d Driver, c ConditionalWriter) Driver {
	return conditionalDriver{Driver: d, ConditionalWriter: c}
}

type conditionalDriver struct {
	Driver
	ConditionalWriter
}

// ContentVersion is the version of content for drivers whose store keeps no
// version of its own: its SHA-256, in hex.
func ContentVersion(content []byte) string {
	sum := sha256.Sum256(content)
	return hex.EncodeToString(sum[:])
}

// StagedWriter is an optional capability of a Driver: a writer of a new
// file whose bytes stay invisible until Commit, on a store whose writes are
// not seen until they are committed (an S3 multipart upload until
// CompleteMultipartUpload, Azure blocks until Put Block List). The origin
// writes a push whose digest it knows in advance straight to the blob's
// path this way and commits only once the digest checks, where otherwise
// it writes to the upload's directory and Moves the verified bytes, which
// on an object store is a server-side copy of the whole blob. Drivers whose
// bytes are visible as they are written (filesystem, HDFS, append blobs)
// do not offer it. Find it with StagedWriterOf.
type StagedWriter interface {
	// StagedWriter opens a writer of path. Until Commit, nothing of what
	// it is written is seen at path (by Stat, Reader, GetContent, List or
	// Walk), and a file already at path stays as it is; Commit replaces
	// it whole, in one step. Cancel, and a Close without Commit, discard
	// the bytes and leave path as it was. The writer cannot be continued
	// (there is no append).
	//
	// stage is a directory that the caller owns and deletes once it is
	// done with the write, or gives up on it (an upload session's). A
	// driver may keep there what it needs to find the bytes of a writer
	// that was neither committed nor cancelled, its process killed, so
	// that Delete(stage) discards them too; stores that discard such
	// bytes by themselves keep nothing there.
	StagedWriter(ctx context.Context, path, stage string) (FileWriter, error)
}

// StagedWriterOf returns d's staged writes, looking through Instrument's
// wrapper (whose commit metric they keep), or false if d has none.
func StagedWriterOf(d Driver) (StagedWriter, bool) {
	in, instrumented := d.(*instrumented)
	if instrumented {
		d = in.Driver
	}
	sw, ok := d.(StagedWriter)
	if !ok {
		return nil, false
	}
	if instrumented {
		return instrumentedStaged{sw: sw, i: in}, true
	}
	return sw, true
}
