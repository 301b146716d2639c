package gcs

import (
	"context"

	"cloud.google.com/go/storage"

	shoalstorage "github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore"
)

// gcsDriver is the driver Open returns: d as objectstore.Wrap adapted it,
// with the capabilities the SDK gives beside it (storage.ConditionalWriter,
// storage.StagedWriter).
type gcsDriver struct {
	*objectstore.Driver
	*conditional
	*staged
}

// The capabilities must stay promoted: a method of the same name on
// objectstore.Driver would hide both.
var (
	_ shoalstorage.ConditionalWriter = (*gcsDriver)(nil)
	_ shoalstorage.StagedWriter      = (*gcsDriver)(nil)
)

func withCapabilities(wrapped *objectstore.Driver, d *driver) shoalstorage.Driver {
	return &gcsDriver{
		Driver:      wrapped,
		conditional: &conditional{d: d, errs: wrapped},
		staged:      &staged{d: d, errs: wrapped},
	}
}

// staged makes GCS's staged writes (storage.StagedWriter) as a resumable
// upload to the object's own name, in the driver's chunks: the object is
// created, or replaced whole, only when the upload is finalized, at Commit
// (less than one chunk is one upload request at Commit); until then a
// reader, a listing and the object already at the name see nothing of it.
// Cancel, or Close without Commit, abandons the upload without finalizing
// it: the SDK's requests are cancelled before the last chunk can go.
//
// Nothing is kept in the stage: GCS discards an unfinished resumable upload
// after a week by itself, and it is never an object meanwhile.
type staged struct {
	d *driver
	// errs maps errors as the driver's own calls map them, and gives
	// the writer the end states of the driver's writers.
	errs *objectstore.Driver
}

// StagedWriter opens a staged writer of p (storage.StagedWriter).
func (s *staged) StagedWriter(ctx context.Context, p, stage string) (shoalstorage.FileWriter, error) {
	return s.errs.OpenStaged(p, stage, func() (shoalstorage.FileWriter, error) {
		ctx, cancel := context.WithCancel(ctx)
		return &stagedUpload{obj: s.d.bucket.Object(s.d.key(p)), chunkSize: s.d.chunkSize, ctx: ctx, cancel: cancel}, nil
	})
}

// stagedUpload is one staged write; objectstore's writer around it keeps
// its end states and its Size.
type stagedUpload struct {
	obj       *storage.ObjectHandle
	chunkSize int
	ctx       context.Context
	cancel    context.CancelFunc // abandons the upload
	w         *storage.Writer    // opened at the first byte
}

func (u *stagedUpload) open() {
	u.w = u.obj.NewWriter(u.ctx)
	u.w.ContentType = contentType
	u.w.ChunkSize = u.chunkSize
}

func (u *stagedUpload) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if u.w == nil {
		u.open()
	}
	return u.w.Write(p)
}

// Size is what objectstore's writer counts.
func (u *stagedUpload) Size() int64 { return 0 }

// Commit finalizes the upload: the object is what was written, whole.
func (u *stagedUpload) Commit(context.Context) error {
	defer u.cancel()
	if u.w == nil {
		u.open() // an empty file is a file too
	}
	return u.w.Close()
}

// Close without Commit abandons the upload.
func (u *stagedUpload) Close() error { return u.abandon() }

// Cancel abandons the upload; the object at the name, if any, stays.
func (u *stagedUpload) Cancel(context.Context) error { return u.abandon() }

func (u *stagedUpload) abandon() error {
	u.cancel() // first, so that Close cannot send the last chunk
	if u.w != nil {
		_ = u.w.Close() // returns the cancellation
	}
	return nil
}
