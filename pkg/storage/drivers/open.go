// Package drivers opens a storage driver from a URL, the one way Shoal's
// binaries and tests choose their storage.
package drivers

import (
	"context"
	"fmt"
	"net/url"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/azure"
	"github.com/shoal-dev/shoal/pkg/storage/filesystem"
	"github.com/shoal-dev/shoal/pkg/storage/gcs"
	"github.com/shoal-dev/shoal/pkg/storage/hdfs"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/pkg/storage/s3"
)

// Supported lists the URL forms Open accepts, for error messages and help
// texts.
const Supported = "file:///abs/path (or a plain path), inmemory://, hdfs://namenode:8020[,namenode2:8020]/prefix, " +
	"s3://bucket/prefix?region=...&endpoint=...&pathStyle=true, azure://container/prefix?account=...&endpoint=..., gs://bucket/prefix?endpoint=..."

// Open returns the driver that rawURL names:
//
//	file:///var/lib/shoal     the filesystem driver rooted there
//	/var/lib/shoal, ./data    the same, for a plain absolute or relative path
//	inmemory://               a new, empty in-memory driver (each call its own)
//	hdfs://nn1:8020,nn2:8020/shoal
//	                          HDFS, with the prefix as root
//	s3://bucket/prefix?region=eu-west-1
//	                          S3 or an S3-compatible store (endpoint=...)
//	azure://container/prefix?account=name
//	                          Azure Blob Storage
//	gs://bucket/prefix        Google Cloud Storage
//
// The object stores take credentials from the environment, the shared
// config files and workload identity of their ecosystem, never from the URL
// (docs/storage.md).
func Open(ctx context.Context, rawURL string) (storage.Driver, error) {
	if rawURL == "" {
		return nil, fmt.Errorf("opening storage: empty URL; use one of %s", Supported)
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" {
		// Not a URL (or one without a scheme): a path. Paths may hold
		// characters that do not parse as a URL, such as "%".
		return openFilesystem(rawURL, rawURL)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("opening storage %q: a file URL names a local path and has no host; write file:///abs/path", rawURL)
		}
		if u.Path == "" {
			return nil, fmt.Errorf("opening storage %q: no path; write file:///abs/path", rawURL)
		}
		return openFilesystem(rawURL, u.Path)
	case "inmemory":
		if u.Host != "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("opening storage %q: inmemory:// takes no host or path", rawURL)
		}
		return inmemory.New(), nil
	case "hdfs":
		return hdfs.Open(ctx, u)
	case "s3":
		return s3.Open(ctx, u)
	case "azure":
		return azure.Open(ctx, u)
	case "gs":
		return gcs.Open(ctx, u)
	default:
		return nil, fmt.Errorf("opening storage %q: unsupported scheme %q; supported: %s", rawURL, u.Scheme, Supported)
	}
}

func openFilesystem(rawURL, root string) (storage.Driver, error) {
	d, err := filesystem.New(root)
	if err != nil {
		return nil, fmt.Errorf("opening storage %q: %w", rawURL, err)
	}
	return d, nil
}
