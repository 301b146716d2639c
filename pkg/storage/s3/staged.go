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
// once (objectstore.PartWriter). The reference writer sends one at a time
// and takes no bytes meanwhile; with two, the store receives a part while
// the next is being filled, at the cost of holding up to three parts
// per writer (two sent, one filling) where the reference writer holds one.
const stagedPartsInFlight = 2

// StagedWriter opens a staged writer of p (storage.StagedWriter).
func (s *staged) StagedWriter(ctx context.Context, p, stage string) (storage.FileWriter, error) {
	return s.errs.OpenStaged(p, stage, func() (storage.FileWriter, error) { return s.open(ctx, p, stage), nil })
}

func (s *staged) open(ctx context.Context, p, stage string) *objectstore.PartWriter {
	return objectstore.NewPartWriter(ctx, &stagedUpload{s: s, key: s.inner.key(p), stage: stage}, s.cfg.ChunkSize, stagedPartsInFlight)
}

// stagedUpload is the multipart upload of one staged write
// (objectstore.Parts).
type stagedUpload struct {
	s     *staged
	key   string
	stage string

	uploadID string
	marker   string // the marker's key

	mu    sync.Mutex
	parts []*s3.CompletedPart // guarded by mu
}

// Start creates the multipart upload at the key, with the object's
// settings as the reference driver gives them, and writes its marker.
func (u *stagedUpload) Start(ctx context.Context) error {
	cfg, d := u.s.cfg, u.s.inner
	in := &s3.CreateMultipartUploadInput{
		Bucket:       aws.String(d.bucket),
		Key:          aws.String(u.key),
		ContentType:  aws.String("application/octet-stream"),
		ACL:          aws.String(s3.ObjectCannedACLPrivate),
		StorageClass: cfg.storageClass(),
	}
	in.ServerSideEncryption, in.SSEKMSKeyId = cfg.encryption()
	out, err := d.client.CreateMultipartUploadWithContext(ctx, in)
	if err != nil {
		return fmt.Errorf("starting a multipart upload: %w", err)
	}
	u.uploadID = aws.StringValue(out.UploadId)
	sum := sha256.Sum256([]byte(u.uploadID))
	u.marker = d.key(path.Join(u.stage, stagedMarkers, hex.EncodeToString(sum[:8])))
	if _, err := d.client.PutObjectWithContext(ctx, &s3.PutObjectInput{
		Bucket: aws.String(d.bucket),
		Key:    aws.String(u.marker),
		Body:   strings.NewReader(u.key + "\n" + u.uploadID),
	}); err != nil {
		_ = u.Abort(context.WithoutCancel(ctx))
		return fmt.Errorf("writing the marker of multipart upload %s: %w", u.uploadID, err)
	}
	return nil
}

// Part uploads part num.
func (u *stagedUpload) Part(ctx context.Context, num int, b []byte) error {
	d := u.s.inner
	out, err := d.client.UploadPartWithContext(ctx, &s3.UploadPartInput{
		Bucket:     aws.String(d.bucket),
		Key:        aws.String(u.key),
		PartNumber: aws.Int64(int64(num)),
		UploadId:   aws.String(u.uploadID),
		Body:       bytes.NewReader(b),
	})
	if err != nil {
		return fmt.Errorf("uploading part %d: %w", num, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.parts = append(u.parts, &s3.CompletedPart{ETag: out.ETag, PartNumber: aws.Int64(int64(num))})
	return nil
}

// Complete completes the multipart upload, then deletes its marker: the
// stage's Delete would only find the upload gone.
func (u *stagedUpload) Complete(ctx context.Context, n int) error {
	d := u.s.inner
	u.mu.Lock()
	parts := u.parts
	u.mu.Unlock()
	if len(parts) != n {
		return fmt.Errorf("completing multipart upload %s: %d parts stored, %d sent", u.uploadID, len(parts), n)
	}
	sort.Slice(parts, func(i, j int) bool { return *parts[i].PartNumber < *parts[j].PartNumber })
	if _, err := d.client.CompleteMultipartUploadWithContext(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(d.bucket),
		Key:             aws.String(u.key),
		UploadId:        aws.String(u.uploadID),
		MultipartUpload: &s3.CompletedMultipartUpload{Parts: parts},
	}); err != nil {
		return fmt.Errorf("completing multipart upload %s: %w", u.uploadID, err)
	}
	_, _ = d.client.DeleteObjectWithContext(ctx, &s3.DeleteObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(u.marker)})
	return nil
}

// PutWhole writes the object in one PutObject.
func (u *stagedUpload) PutWhole(ctx context.Context, b []byte) error {
	in := &s3.PutObjectInput{
		Bucket:       aws.String(u.s.inner.bucket),
		Key:          aws.String(u.key),
		ContentType:  aws.String("application/octet-stream"),
		ACL:          aws.String(s3.ObjectCannedACLPrivate),
		StorageClass: u.s.cfg.storageClass(),
		Body:         bytes.NewReader(b),
	}
	in.ServerSideEncryption, in.SSEKMSKeyId = u.s.cfg.encryption()
	_, err := u.s.inner.client.PutObjectWithContext(ctx, in)
	return err
}

// Abort aborts the multipart upload and removes its marker.
func (u *stagedUpload) Abort(ctx context.Context) error {
	d := u.s.inner
	_, err := d.client.AbortMultipartUploadWithContext(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(d.bucket), Key: aws.String(u.key), UploadId: aws.String(u.uploadID),
	})
	if err != nil && !isNoSuchUpload(err) {
		return fmt.Errorf("aborting multipart upload %s: %w", u.uploadID, err)
	}
	if u.marker != "" {
		_, _ = d.client.DeleteObjectWithContext(ctx, &s3.DeleteObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(u.marker)})
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
