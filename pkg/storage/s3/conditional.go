package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/service/s3"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore"
)

// conditional makes S3's conditional writes (storage.ConditionalWriter):
// PutObject with If-None-Match: * creates an object only if there is none,
// and with If-Match: <ETag> replaces it only if it is still that version;
// the store answers 412 (or 409 to the loser of two writes in flight)
// otherwise. AWS S3 has both since 2024; Versity's gateway evaluates them
// under its per-object publish lock. It calls through the driver's own
// client (driver.client).
type conditional struct {
	inner *driver
	cfg   Config
	// errs maps errors as the driver's own calls map them.
	errs *objectstore.Driver
}

// GetContentVersion reads the object at p and its ETag.
func (c *conditional) GetContentVersion(ctx context.Context, p string) ([]byte, string, error) {
	if err := objectstore.CheckPath(p, DriverName); err != nil {
		return nil, "", err
	}
	out, err := c.inner.client.GetObjectWithContext(ctx, &s3.GetObjectInput{Bucket: aws.String(c.inner.bucket), Key: aws.String(c.inner.key(p))})
	if status(err) == http.StatusNotFound {
		return nil, "", storage.PathNotFoundError{Path: p, DriverName: DriverName}
	}
	if err != nil {
		return nil, "", c.errs.MapError("get", p, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, "", c.errs.MapError("get", p, err)
	}
	return b, aws.StringValue(out.ETag), nil
}

// PutContentIf writes the object at p in one PutObject, on condition that
// it has ETag ifVersion, or with ifVersion "" that there is none.
func (c *conditional) PutContentIf(ctx context.Context, p string, content []byte, ifVersion string) (string, error) {
	if err := objectstore.CheckPath(p, DriverName); err != nil {
		return "", err
	}
	// As the reference driver's PutContent writes objects.
	in := &s3.PutObjectInput{
		Bucket:      aws.String(c.inner.bucket),
		Key:         aws.String(c.inner.key(p)),
		ContentType: aws.String("application/octet-stream"),
		ACL:         aws.String(s3.ObjectCannedACLPrivate),
		Body:        bytes.NewReader(content),
	}
	in.StorageClass = c.cfg.storageClass()
	in.ServerSideEncryption, in.SSEKMSKeyId = c.cfg.encryption()
	req, out := c.inner.client.PutObjectRequest(in)
	req.SetContext(ctx)
	// aws-sdk-go v1's PutObjectInput predates the two headers; they are
	// added before the request is signed.
	if ifVersion == "" {
		req.HTTPRequest.Header.Set("If-None-Match", "*")
	} else {
		req.HTTPRequest.Header.Set("If-Match", ifVersion)
	}
	err := req.Send()
	switch s := status(err); {
	case err == nil:
		return aws.StringValue(out.ETag), nil
	case s == http.StatusPreconditionFailed, s == http.StatusConflict, s == http.StatusNotFound && ifVersion != "":
		return "", fmt.Errorf("s3 put %s: %w (%w)", p, storage.ErrConditionFailed, err)
	default:
		return "", c.errs.MapError("put", p, err)
	}
}

// status is the HTTP status of an S3 answer, 0 without one.
func status(err error) int {
	var rf awserr.RequestFailure
	if errors.As(err, &rf) {
		return rf.StatusCode()
	}
	return 0
}
