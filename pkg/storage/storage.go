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
