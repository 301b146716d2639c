package s3

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/service/s3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// driver is the reference driver with a Delete that also aborts the
// multipart uploads left open under the deleted path.
//
// The reference writer is an S3 multipart upload: it stays open until it is
// committed or cancelled, and an open one is not an object, so neither List
// nor the reference Delete sees it, and S3 keeps (and bills) its parts until
// it is aborted. An origin killed in the middle of a chunk leaves one under
// the upload session's directory; registry:2 leaves one for every session
// it never finished. Deleting the session's directory (the closing PUT,
// DELETE of the upload, GC's purge of sessions older than
// gc.uploadMaxAge) therefore aborts them too, so no part outlives its
// session.
type driver struct {
	storagedriver.StorageDriver
	// client makes Shoal's own calls (these aborts, the conditional
	// writes): the reference driver keeps its client to itself.
	client *s3.S3
	bucket string
	prefix string
}

// key is the object key of storage path p, as the reference driver names it.
func (d *driver) key(p string) string {
	return strings.TrimLeft(strings.TrimRight(d.prefix, "/")+p, "/")
}

// Delete removes the objects at and under p, then aborts the multipart
// uploads open at or under p and those of the staged writes whose markers
// are in p (staged.go): a staged write's upload is at its object's key,
// not under the stage it names. A path that holds only open uploads is
// found (and emptied) as well.
func (d *driver) Delete(ctx context.Context, p string) error {
	markers, serr := d.abortStaged(ctx, p)
	if serr != nil {
		return fmt.Errorf("aborting the staged writes of %s: %w", p, serr)
	}
	err := d.StorageDriver.Delete(ctx, p)
	var notFound storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &notFound) {
		return err
	}
	aborted, aerr := d.abortUploads(ctx, p)
	switch {
	case aerr != nil:
		return fmt.Errorf("aborting the multipart uploads under %s: %w", p, aerr)
	case err != nil && aborted == 0 && markers == 0:
		return err
	}
	return nil
}

// abortUploads aborts every multipart upload whose key is p's or under it,
// and returns how many it aborted.
func (d *driver) abortUploads(ctx context.Context, p string) (int, error) {
	key := d.key(p)
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(d.bucket), Prefix: aws.String(key)}
	n := 0
	for {
		resp, err := d.client.ListMultipartUploadsWithContext(ctx, in)
		if err != nil {
			return n, err
		}
		for _, u := range resp.Uploads {
			k := aws.StringValue(u.Key)
			if k != key && !strings.HasPrefix(k, key+"/") {
				continue // "/a" does not hold "/ab"
			}
			_, err := d.client.AbortMultipartUploadWithContext(ctx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(d.bucket), Key: u.Key, UploadId: u.UploadId,
			})
			var ae awserr.Error
			if err != nil && !(errors.As(err, &ae) && ae.Code() == s3.ErrCodeNoSuchUpload) {
				return n, err
			}
			n++
		}
		if !aws.BoolValue(resp.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = resp.NextKeyMarker, resp.NextUploadIdMarker
	}
}

var _ storage.Driver = (*driver)(nil)
