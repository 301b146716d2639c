package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/service/s3"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore"
)

// staged makes S3's staged writes (storage.StagedWriter): an object that
// appears only when its write is complete. A body of less than one part
// is held in memory and sent as one PutObject at Commit; a larger one is
// a multipart upload at the object's own key, completed at Commit. Either
// way nothing is at the key before Commit, and an object already there is
// untouched until CompleteMultipartUpload (or the PutObject) replaces it
// whole: S3 makes an object visible only once its upload completes.
//
// A multipart upload is no object, so a process killed before Commit
// leaves one open that no listing shows. Its key and id go into a marker
// object in the caller's stage directory, <stage>/staged/<hash of the id>,
// written as the upload is created; Delete of the stage directory reads
// the markers there and aborts their uploads (Delete in uploads.go). A
// committed writer deletes its marker; a cancelled one aborts its upload
// at once.
type staged struct {
	inner *driver
	cfg   Config
	// errs maps errors as the driver's own calls map them, and gives
	// the writer the end states of the driver's writers.
	errs *objectstore.Driver
}

// stagedMarkers is the directory, under a stage, of the markers of its
// open multipart uploads.
const stagedMarkers = "staged"

// stagedPartsInFlight is how many parts of one staged write are sent at
// once. The reference writer sends one at a time and takes no bytes
// meanwhile; with two, the store receives a part while the next is
// being filled, at the cost of one part's memory more per writer.
const stagedPartsInFlight = 2

// StagedWriter opens a staged writer of p (storage.StagedWriter).
func (s *staged) StagedWriter(ctx context.Context, p, stage string) (storage.FileWriter, error) {
	if err := objectstore.CheckPath(p, DriverName); err != nil {
		return nil, err
	}
	if err := objectstore.CheckPath(stage, DriverName); err != nil {
		return nil, err
	}
	return s.errs.WrapWriter(p, s.open(ctx, p, stage)), nil
}

func (s *staged) open(ctx context.Context, p, stage string) *stagedWriter {
	return &stagedWriter{s: s, ctx: ctx, path: p, key: s.inner.key(p), stage: stage,
		inFlight: make(chan struct{}, stagedPartsInFlight)}
}

// stagedWriter is one staged write. Its methods are called from one
// goroutine; parts are sent on goroutines of their own.
type stagedWriter struct {
	s     *staged
	ctx   context.Context
	path  string
	key   string
	stage string

	buf  []byte // the part being filled
	size int64  // bytes taken

	uploadID string // "" until the first full part
	marker   string // the marker's key
	nextPart int64
	inFlight chan struct{} // a token per part being sent
	wg       sync.WaitGroup

	mu    sync.Mutex
	parts []*s3.CompletedPart // guarded by mu
	err   error               // the first part's failure; guarded by mu

	done bool // committed or cancelled
}

var partBuffers sync.Pool

func (w *stagedWriter) newBuf() []byte {
	if b, ok := partBuffers.Get().(*[]byte); ok && cap(*b) == w.s.cfg.ChunkSize {
		return (*b)[:0]
	}
	return make([]byte, 0, w.s.cfg.ChunkSize)
}

func (w *stagedWriter) partErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *stagedWriter) Write(p []byte) (int, error) {
	if err := w.partErr(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = w.newBuf()
		}
		k := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p, n = p[k:], n+k
		w.size += int64(k)
		if len(w.buf) == cap(w.buf) {
			if err := w.send(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (w *stagedWriter) Size() int64 { return w.size }

// send starts sending the filled buffer as the next part, once fewer than
// stagedPartsInFlight are being sent, creating the multipart upload (and
// its marker) with the first.
func (w *stagedWriter) send() error {
	if w.uploadID == "" {
		if err := w.create(); err != nil {
			return err
		}
	}
	w.inFlight <- struct{}{}
	if err := w.partErr(); err != nil {
		<-w.inFlight
		return err
	}
	w.nextPart++
	num, buf := w.nextPart, w.buf
	w.buf = nil
	w.wg.Go(func() {
		defer func() { <-w.inFlight }()
		defer partBuffers.Put(&buf)
		out, err := w.s.inner.client.UploadPartWithContext(w.ctx, &s3.UploadPartInput{
			Bucket:     aws.String(w.s.inner.bucket),
			Key:        aws.String(w.key),
			PartNumber: aws.Int64(num),
			UploadId:   aws.String(w.uploadID),
			Body:       bytes.NewReader(buf),
		})
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			if w.err == nil {
				w.err = fmt.Errorf("uploading part %d: %w", num, err)
			}
			return
		}
		w.parts = append(w.parts, &s3.CompletedPart{ETag: out.ETag, PartNumber: aws.Int64(num)})
	})
	return nil
}

// create starts the multipart upload at the key, with the object's
// settings as the reference driver gives them, and writes its marker.
func (w *stagedWriter) create() error {
	cfg, d := w.s.cfg, w.s.inner
	in := &s3.CreateMultipartUploadInput{
		Bucket:       aws.String(d.bucket),
		Key:          aws.String(w.key),
		ContentType:  aws.String("application/octet-stream"),
		ACL:          aws.String(s3.ObjectCannedACLPrivate),
		StorageClass: cfg.storageClass(),
	}
	in.ServerSideEncryption, in.SSEKMSKeyId = cfg.encryption()
	out, err := d.client.CreateMultipartUploadWithContext(w.ctx, in)
	if err != nil {
		return fmt.Errorf("starting a multipart upload: %w", err)
	}
	w.uploadID = aws.StringValue(out.UploadId)
	sum := sha256.Sum256([]byte(w.uploadID))
	w.marker = d.key(path.Join(w.stage, stagedMarkers, hex.EncodeToString(sum[:8])))
	if _, err := d.client.PutObjectWithContext(w.ctx, &s3.PutObjectInput{
		Bucket: aws.String(d.bucket),
		Key:    aws.String(w.marker),
		Body:   strings.NewReader(w.key + "\n" + w.uploadID),
	}); err != nil {
		w.abort(context.WithoutCancel(w.ctx))
		return fmt.Errorf("writing the marker of multipart upload %s: %w", w.uploadID, err)
	}
	return nil
}

// Commit makes the object visible: one PutObject for a body of less than
// a part, else the last part and CompleteMultipartUpload.
func (w *stagedWriter) Commit(ctx context.Context) error {
	w.done = true
	d := w.s.inner
	if w.uploadID == "" {
		in := &s3.PutObjectInput{
			Bucket:       aws.String(d.bucket),
			Key:          aws.String(w.key),
			ContentType:  aws.String("application/octet-stream"),
			ACL:          aws.String(s3.ObjectCannedACLPrivate),
			StorageClass: w.s.cfg.storageClass(),
			Body:         bytes.NewReader(w.buf),
		}
		in.ServerSideEncryption, in.SSEKMSKeyId = w.s.cfg.encryption()
		_, err := d.client.PutObjectWithContext(ctx, in)
		w.release()
		return err
	}
	if len(w.buf) > 0 {
		if err := w.send(); err != nil {
			w.abort(context.WithoutCancel(ctx))
			return err
		}
	}
	w.wg.Wait()
	if err := w.partErr(); err != nil {
		w.abort(context.WithoutCancel(ctx))
		return err
	}
	sort.Slice(w.parts, func(i, j int) bool { return *w.parts[i].PartNumber < *w.parts[j].PartNumber })
	if _, err := d.client.CompleteMultipartUploadWithContext(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(d.bucket),
		Key:             aws.String(w.key),
		UploadId:        aws.String(w.uploadID),
		MultipartUpload: &s3.CompletedMultipartUpload{Parts: w.parts},
	}); err != nil {
		w.abort(context.WithoutCancel(ctx))
		return fmt.Errorf("completing multipart upload %s: %w", w.uploadID, err)
	}
	// The marker's upload is complete; the stage's Delete would only
	// find it gone.
	_, _ = d.client.DeleteObjectWithContext(ctx, &s3.DeleteObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(w.marker)})
	return nil
}

// Cancel discards what was written; the key stays as it was.
func (w *stagedWriter) Cancel(ctx context.Context) error {
	if w.done {
		return nil
	}
	w.done = true
	if w.uploadID == "" {
		w.release()
		return nil
	}
	w.wg.Wait()
	return w.abort(ctx)
}

// Close without Commit cancels: a staged write cannot be continued.
func (w *stagedWriter) Close() error {
	return w.Cancel(context.WithoutCancel(w.ctx))
}

// release gives back the buffer of a write that sent no part.
func (w *stagedWriter) release() {
	if b := w.buf; b != nil {
		partBuffers.Put(&b)
		w.buf = nil
	}
}

// abort aborts the multipart upload once its parts in flight are done,
// and removes its marker.
func (w *stagedWriter) abort(ctx context.Context) error {
	w.wg.Wait()
	w.release()
	d := w.s.inner
	_, err := d.client.AbortMultipartUploadWithContext(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(d.bucket), Key: aws.String(w.key), UploadId: aws.String(w.uploadID),
	})
	if err != nil && !isNoSuchUpload(err) {
		return fmt.Errorf("aborting multipart upload %s: %w", w.uploadID, err)
	}
	if w.marker != "" {
		_, _ = d.client.DeleteObjectWithContext(ctx, &s3.DeleteObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(w.marker)})
	}
	return nil
}

// abortStaged aborts the multipart uploads whose markers are in directory
// p (a stage), for a Delete of p: the uploads of staged writers that were
// neither committed nor cancelled. It returns how many markers it found.
func (d *driver) abortStaged(ctx context.Context, p string) (int, error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(d.bucket), Prefix: aws.String(d.key(path.Join(p, stagedMarkers)) + "/")}
	n := 0
	for {
		out, err := d.client.ListObjectsV2WithContext(ctx, in)
		if err != nil {
			return n, err
		}
		for _, o := range out.Contents {
			n++
			get, err := d.client.GetObjectWithContext(ctx, &s3.GetObjectInput{Bucket: aws.String(d.bucket), Key: o.Key})
			if err != nil {
				if status(err) == 404 {
					continue // committed or cancelled meanwhile
				}
				return n, err
			}
			b, err := io.ReadAll(io.LimitReader(get.Body, 4<<10))
			get.Body.Close()
			if err != nil {
				return n, err
			}
			key, id, ok := strings.Cut(string(b), "\n")
			if !ok || key == "" || id == "" {
				continue // not a marker of ours
			}
			_, err = d.client.AbortMultipartUploadWithContext(ctx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(d.bucket), Key: aws.String(key), UploadId: aws.String(id),
			})
			if err != nil && !isNoSuchUpload(err) {
				return n, err
			}
		}
		if !aws.BoolValue(out.IsTruncated) {
			return n, nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

func isNoSuchUpload(err error) bool {
	var ae awserr.Error
	return errors.As(err, &ae) && ae.Code() == s3.ErrCodeNoSuchUpload
}
