// Package s3 is the storage driver for Amazon S3 and the stores that speak
// its API: Alibaba OSS, OpenStack Swift's s3api, Ceph RGW, MinIO-compatible
// endpoints, Versity's S3 gateway.
//
// It is the reference registry's s3-aws driver (registry:2's own), behind
// Shoal's storage URL and adapted to Shoal's contract by
// pkg/storage/internal/objectstore, so a bucket written by registry:2 is
// read by Shoal and the other way round: keys are the prefix followed by
// registry:2's paths.
//
// Credentials never appear in the URL. They come from where every AWS tool
// finds them: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and
// AWS_SESSION_TOKEN), the shared credentials file (~/.aws/credentials,
// AWS_PROFILE; ~/.aws/config with AWS_SDK_LOAD_CONFIG=1), web identity
// (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, as EKS sets them), or the
// EC2/ECS instance role.
//
// S3 cannot append to an object. The reference driver keeps a writer that is
// closed without Commit as an open multipart upload, which a later
// Writer(append=true) continues; a committed object cannot be appended to,
// and Writer(append=true) on one fails. The origin then starts a new part of
// the upload (pkg/origin/uploads.go), so chunked uploads work across origin
// nodes all the same.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
	s3aws "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore"
)

// DriverName is the name in errors and the scheme of storage URLs.
const DriverName = "s3"

// Config says which bucket the driver uses and how it reaches it. ParseURL
// builds one from a storage URL.
type Config struct {
	// Bucket is the bucket's name. It must exist: the driver never creates
	// buckets, as registry:2's does not.
	Bucket string
	// Prefix is the key prefix under which every path is kept, as
	// registry:2's rootdirectory: "/registry" keeps /docker/registry/v2/...
	// at registry/docker/registry/v2/.... Empty: the bucket's root.
	Prefix string
	// Region is the bucket's region. Default: $AWS_REGION, else
	// $AWS_DEFAULT_REGION; with a custom Endpoint and neither set,
	// "us-east-1", which S3-compatible stores accept for signing.
	Region string
	// Endpoint is the store's URL (http:// or https://) for stores other
	// than AWS; empty means AWS's endpoint for Region.
	Endpoint string
	// PathStyle addresses the bucket as Endpoint/bucket instead of
	// bucket.Endpoint, which most S3-compatible stores (Swift s3api, Ceph
	// RGW without wildcard DNS, test servers) need. Default false.
	PathStyle bool
	// ChunkSize is the size of the parts of a multipart upload: a writer
	// holds one part in memory. Default 10 MiB (registry:2's); at least
	// 5 MiB, S3's minimum.
	ChunkSize int
	// StorageClass of new objects. Default STANDARD; "NONE" sends none, for
	// stores that reject the header.
	StorageClass string
	// Encrypt asks for server-side encryption (SSE-S3, or SSE-KMS with
	// KMSKeyID). Default false.
	Encrypt bool
	// KMSKeyID is the KMS key for SSE-KMS; only with Encrypt.
	KMSKeyID string
	// Redirect makes the origin answer an authorized blob GET with a 307
	// to a pre-signed URL of the blob's object (valid 20 minutes), so the
	// bytes come from S3 rather than through the origin. Default false.
	Redirect bool
	// Reads sizes the ranged GETs of a large read (storage URL parameters
	// readRangeSize and readRanges; docs/storage.md).
	Reads objectstore.Reads
}

// defaultChunkSize is registry:2's part size, 10 MiB: two of S3's 5 MiB
// minimum, so that most layers need few parts.
const defaultChunkSize = 10 << 20

// ParseURL reads a storage URL of the form
//
//	s3://BUCKET/PREFIX?region=eu-west-1&endpoint=https://host:port&pathStyle=true
//
// Further query parameters: chunkSize (bytes), storageClass, encrypt,
// kmsKeyID, redirect, readRangeSize and readRanges (objectstore.Reads).
// Unknown parameters are an error, and so are credentials in the URL.
func ParseURL(u *url.URL) (Config, error) {
	if u.User != nil {
		return Config{}, fmt.Errorf("s3 storage URL: credentials never go in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a profile or an instance role")
	}
	cfg := Config{Bucket: u.Host, Prefix: strings.TrimRight(u.Path, "/")}
	if cfg.Bucket == "" {
		return Config{}, fmt.Errorf("s3 storage URL %q: no bucket; write s3://BUCKET/PREFIX", u.Redacted())
	}
	for key, vals := range u.Query() {
		v := vals[len(vals)-1]
		var err error
		switch key {
		case "region":
			cfg.Region = v
		case "endpoint":
			cfg.Endpoint = v
		case "pathStyle":
			cfg.PathStyle, err = strconv.ParseBool(v)
		case "chunkSize":
			cfg.ChunkSize, err = strconv.Atoi(v)
		case "storageClass":
			cfg.StorageClass = v
		case "encrypt":
			cfg.Encrypt, err = strconv.ParseBool(v)
		case "kmsKeyID":
			cfg.KMSKeyID = v
		case "redirect":
			cfg.Redirect, err = strconv.ParseBool(v)
		default:
			var ok bool
			if ok, err = cfg.Reads.Parse(key, v); !ok {
				return Config{}, fmt.Errorf("s3 storage URL: unknown parameter %q; known: region, endpoint, pathStyle, chunkSize, storageClass, encrypt, kmsKeyID, redirect, "+objectstore.ReadParams, key)
			}
		}
		if err != nil {
			return Config{}, fmt.Errorf("s3 storage URL: parameter %s=%q: %w", key, v, err)
		}
	}
	return cfg, nil
}

// Open returns a driver for a storage URL (see ParseURL).
func Open(ctx context.Context, u *url.URL) (storage.Driver, error) {
	cfg, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	return New(ctx, cfg)
}

// New returns a driver for cfg. It does not contact the store: a wrong
// bucket or missing credentials show at the first request.
func New(ctx context.Context, cfg Config) (storage.Driver, error) {
	if cfg.Region == "" {
		cfg.Region = os.Getenv("AWS_REGION")
	}
	if cfg.Region == "" {
		cfg.Region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if cfg.Region == "" && cfg.Endpoint != "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("s3 bucket %q: no region; add ?region=... to the URL or set AWS_REGION", cfg.Bucket)
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = defaultChunkSize
	}
	params := map[string]any{
		"bucket":         cfg.Bucket,
		"region":         cfg.Region,
		"rootdirectory":  cfg.Prefix,
		"forcepathstyle": cfg.PathStyle,
		"chunksize":      cfg.ChunkSize,
		"encrypt":        cfg.Encrypt,
	}
	store := fmt.Sprintf("S3 bucket %q in %s", cfg.Bucket, cfg.Region)
	if cfg.Endpoint != "" {
		e, err := url.Parse(cfg.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return nil, fmt.Errorf("s3 bucket %q: endpoint %q is not an http:// or https:// URL", cfg.Bucket, cfg.Endpoint)
		}
		params["regionendpoint"] = cfg.Endpoint
		params["secure"] = e.Scheme == "https"
		store = fmt.Sprintf("S3 bucket %q at %s", cfg.Bucket, cfg.Endpoint)
	}
	if cfg.StorageClass != "" {
		params["storageclass"] = cfg.StorageClass
	}
	if cfg.KMSKeyID != "" {
		params["keyid"] = cfg.KMSKeyID
	}
	d, err := s3aws.FromParameters(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", store, err)
	}
	client, err := newClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", store, err)
	}
	inner := &driver{StorageDriver: d, client: client, bucket: cfg.Bucket, prefix: cfg.Prefix}
	wrapped := objectstore.Wrap(inner, objectstore.Options{Name: DriverName, Store: store, IsOutage: isOutage, Redirect: cfg.Redirect, Ranges: inner, Reads: cfg.Reads})
	return &s3Driver{
		Driver:      wrapped,
		conditional: &conditional{inner: inner, cfg: cfg, errs: wrapped},
		staged:      &staged{inner: inner, cfg: cfg, errs: wrapped},
	}, nil
}

// s3Driver is the driver New returns: the reference driver adapted to
// Shoal's contract, with the capabilities Shoal adds through its own client
// (storage.ConditionalWriter, storage.StagedWriter).
type s3Driver struct {
	*objectstore.Driver
	*conditional
	*staged
}

// The capabilities must stay promoted: a method of the same name on
// objectstore.Driver would hide both.
var (
	_ storage.ConditionalWriter = (*s3Driver)(nil)
	_ storage.StagedWriter      = (*s3Driver)(nil)
)

// storageClass is the storage class of new objects as the reference driver
// sets it (Config.StorageClass), nil for none.
func (c Config) storageClass() *string {
	switch c.StorageClass {
	case "NONE":
		return nil
	case "":
		return aws.String(s3.StorageClassStandard)
	}
	return aws.String(c.StorageClass)
}

// encryption is the server-side encryption of new objects as the
// reference driver asks for it (Config.Encrypt, Config.KMSKeyID).
func (c Config) encryption() (sse, kmsKeyID *string) {
	switch {
	case !c.Encrypt:
		return nil, nil
	case c.KMSKeyID != "":
		return aws.String(s3.ServerSideEncryptionAwsKms), aws.String(c.KMSKeyID)
	}
	return aws.String(s3.ServerSideEncryptionAes256), nil
}

// newClient returns the S3 client of Shoal's own calls (see driver.client)
// for the same store, region, addressing and credentials (the SDK's
// default chain, as the reference driver's) as the reference driver that
// New opens for cfg, which has its defaults applied.
func newClient(cfg Config) (*s3.S3, error) {
	c := aws.NewConfig().WithRegion(cfg.Region).WithS3ForcePathStyle(cfg.PathStyle)
	if cfg.Endpoint != "" {
		e, err := url.Parse(cfg.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", cfg.Endpoint, err)
		}
		c = c.WithEndpoint(cfg.Endpoint).WithDisableSSL(e.Scheme == "http")
	}
	sess, err := session.NewSession(c)
	if err != nil {
		return nil, fmt.Errorf("creating an AWS session: %w", err)
	}
	return s3.New(sess), nil
}

// Throttling and "try again" codes S3 and S3-compatible stores answer with,
// some of them with a 4xx status.
var outageCodes = map[string]bool{
	"SlowDown":                 true,
	"ServiceUnavailable":       true,
	"InternalError":            true,
	"RequestTimeout":           true,
	"Throttling":               true,
	"ThrottlingException":      true,
	"RequestLimitExceeded":     true,
	"RequestThrottled":         true,
	"TooManyRequestsException": true,
	"RequestError":             true, // the SDK could not send the request
}

// isOutage reports whether an error of the AWS SDK says that the store could
// not serve the request now. The SDK has already retried it (three times,
// with backoff) by then.
func isOutage(err error) bool {
	for err != nil {
		var rf awserr.RequestFailure
		if errors.As(err, &rf) && objectstore.IsOutageStatus(rf.StatusCode()) {
			return true
		}
		var ae awserr.Error
		if !errors.As(err, &ae) {
			return objectstore.IsConnFailure(err)
		}
		if outageCodes[ae.Code()] {
			return true
		}
		if objectstore.IsConnFailure(ae.OrigErr()) {
			return true
		}
		err = ae.OrigErr()
	}
	return false
}

// OpenRange reads n bytes of the object at p from off with a ranged
// GetObject, with If-Match: version when version is set
// (objectstore.RangeOpener).
func (d *driver) OpenRange(ctx context.Context, p string, off, n int64, version string) (io.ReadCloser, objectstore.Object, error) {
	in := &s3.GetObjectInput{
		Bucket: aws.String(d.bucket),
		Key:    aws.String(d.key(p)),
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)),
	}
	if version != "" {
		in.IfMatch = aws.String(version)
	}
	out, err := d.client.GetObjectWithContext(ctx, in)
	if err != nil {
		return nil, objectstore.Object{}, objectstore.RangeError(p, DriverName, version, status(err), err)
	}
	obj, err := objectstore.ObjectFromContentRange(off, aws.StringValue(out.ContentRange), aws.Int64Value(out.ContentLength), aws.StringValue(out.ETag))
	if err != nil {
		out.Body.Close()
		return nil, objectstore.Object{}, err
	}
	return out.Body, obj, nil
}
