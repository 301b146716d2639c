// Package azure is the storage driver for Azure Blob Storage.
//
// It is the reference registry's azure driver (registry:2's own), behind
// Shoal's storage URL and adapted to Shoal's contract by
// pkg/storage/internal/objectstore, so a container written by registry:2 is
// read by Shoal and the other way round: blob names are the prefix followed
// by registry:2's paths.
//
// Credentials never appear in the URL. With AZURE_STORAGE_KEY set, the
// driver signs with that account key (shared key); otherwise it uses
// azidentity's default chain: a service principal from AZURE_CLIENT_ID,
// AZURE_TENANT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH),
// workload identity (AZURE_FEDERATED_TOKEN_FILE, as AKS sets it), a managed
// identity, or the Azure CLI's login.
//
// Writers write append blobs, so Writer(append=true) continues a file that
// was committed before, from any node: a chunked upload grows one part in
// place. Files written with PutContent are block blobs, which cannot be
// appended to (Writer(append=true) fails on them, and the origin starts a new
// part).
package azure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	azref "github.com/distribution/distribution/v3/registry/storage/driver/azure"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore"
)

// DriverName is the name in errors and the scheme of storage URLs.
const DriverName = "azure"

// Config says which container the driver uses and how it reaches it.
// ParseURL builds one from a storage URL.
type Config struct {
	// Container is the blob container's name. It must exist: the driver
	// never creates containers, as registry:2's does not.
	Container string
	// Prefix is the blob name prefix under which every path is kept, as
	// registry:2's rootdirectory. Empty: the container's root.
	Prefix string
	// Account is the storage account. Default: $AZURE_STORAGE_ACCOUNT.
	Account string
	// Endpoint is the blob service URL. Default:
	// https://ACCOUNT.blob.core.windows.net. For Azurite:
	// http://127.0.0.1:10000/devstoreaccount1.
	Endpoint string
	// Redirect makes the origin answer an authorized blob GET with a 307
	// to a URL of the blob signed with a read-only SAS (valid 20 minutes),
	// so the bytes come from Azure rather than through the origin.
	// Default false.
	Redirect bool
	// Reads sizes the ranged GETs of a large read (storage URL parameters
	// readRangeSize and readRanges; docs/storage.md).
	Reads objectstore.Reads
}

// ParseURL reads a storage URL of the form
//
//	azure://CONTAINER/PREFIX?account=NAME&endpoint=https://host&redirect=true
//
// Further query parameters: readRangeSize and readRanges
// (objectstore.Reads). Unknown parameters are an error, and so are
// credentials in the URL.
func ParseURL(u *url.URL) (Config, error) {
	if u.User != nil {
		return Config{}, errors.New("azure storage URL: credentials never go in the URL; set AZURE_STORAGE_KEY or use an Azure identity")
	}
	cfg := Config{Container: u.Host, Prefix: strings.TrimRight(u.Path, "/")}
	if cfg.Container == "" {
		return Config{}, fmt.Errorf("azure storage URL %q: no container; write azure://CONTAINER/PREFIX?account=NAME", u.Redacted())
	}
	for key, vals := range u.Query() {
		v := vals[len(vals)-1]
		var err error
		switch key {
		case "account":
			cfg.Account = v
		case "endpoint":
			cfg.Endpoint = v
		case "redirect":
			cfg.Redirect, err = strconv.ParseBool(v)
		default:
			var ok bool
			if ok, err = cfg.Reads.Parse(key, v); !ok {
				return Config{}, fmt.Errorf("azure storage URL: unknown parameter %q; known: account, endpoint, redirect, "+objectstore.ReadParams, key)
			}
		}
		if err != nil {
			return Config{}, fmt.Errorf("azure storage URL: parameter %s=%q: %w", key, v, err)
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
// container or credentials show at the first request.
func New(ctx context.Context, cfg Config) (storage.Driver, error) {
	if cfg.Account == "" {
		cfg.Account = os.Getenv("AZURE_STORAGE_ACCOUNT")
	}
	if cfg.Account == "" {
		return nil, fmt.Errorf("azure container %q: no storage account; add ?account=NAME to the URL or set AZURE_STORAGE_ACCOUNT", cfg.Container)
	}
	params := map[string]any{
		"accountname":   cfg.Account,
		"container":     cfg.Container,
		"rootdirectory": cfg.Prefix,
	}
	store := fmt.Sprintf("Azure container %q of account %s", cfg.Container, cfg.Account)
	if cfg.Endpoint != "" {
		e, err := url.Parse(cfg.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return nil, fmt.Errorf("azure container %q: endpoint %q is not an http:// or https:// URL", cfg.Container, cfg.Endpoint)
		}
		params["serviceurl"] = strings.TrimRight(cfg.Endpoint, "/")
		store = fmt.Sprintf("Azure container %q at %s", cfg.Container, cfg.Endpoint)
	}
	if key := os.Getenv("AZURE_STORAGE_KEY"); key != "" {
		params["accountkey"] = key
		params["credentials"] = map[string]any{"type": azref.CredentialsTypeSharedKey}
	} else {
		params["credentials"] = map[string]any{"type": azref.CredentialsTypeDefault}
	}
	p, err := azref.NewParameters(params)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", store, err)
	}
	ref, err := azref.New(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", store, err)
	}
	var d storage.Driver = ref
	if cfg.Redirect && strings.HasPrefix(cfg.Endpoint, "http:") {
		if d, err = newPlainHTTPRedirects(ref, cfg, os.Getenv("AZURE_STORAGE_KEY")); err != nil {
			return nil, fmt.Errorf("opening %s: %w", store, err)
		}
	}
	cc, err := newContainerClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", store, err)
	}
	wrapped := objectstore.Wrap(d, objectstore.Options{Name: DriverName, Store: store, IsOutage: isOutage, Redirect: cfg.Redirect,
		Ranges: &ranges{container: cc, prefix: cfg.Prefix}, Reads: cfg.Reads})
	return &azureDriver{
		Driver:      wrapped,
		conditional: &conditional{container: cc, prefix: cfg.Prefix, errs: wrapped},
		staged:      &staged{container: cc, prefix: cfg.Prefix, errs: wrapped},
	}, nil
}

// azureDriver is the driver New returns: the reference driver adapted to
// Shoal's contract, with the capabilities Shoal adds through its own client
// (storage.ConditionalWriter, storage.StagedWriter).
type azureDriver struct {
	*objectstore.Driver
	*conditional
	*staged
}

// The capabilities must stay promoted: a method of the same name on
// objectstore.Driver would hide both.
var (
	_ storage.ConditionalWriter = (*azureDriver)(nil)
	_ storage.StagedWriter      = (*azureDriver)(nil)
)

// blobName is the name of path p's blob, as the reference driver names it.
func blobName(prefix, p string) string {
	return strings.TrimLeft(strings.TrimRight(prefix, "/")+p, "/")
}

// isOutage reports whether an error of the Azure SDK says that the store
// could not serve the request now (5xx or throttling, after the SDK's own
// three retries with backoff).
func isOutage(err error) bool {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return objectstore.IsOutageStatus(re.StatusCode) || re.ErrorCode == "ServerBusy" || re.ErrorCode == "OperationTimedOut"
	}
	// The reference driver formats some SDK errors with %v, which keeps
	// only their text: azcore's has "RESPONSE <status>:", a failed
	// connection the net package's words.
	msg := err.Error()
	if m := responseStatus.FindStringSubmatch(msg); m != nil {
		code, _ := strconv.Atoi(m[1])
		return objectstore.IsOutageStatus(code)
	}
	return connFailureText.MatchString(msg)
}

var (
	responseStatus  = regexp.MustCompile(`RESPONSE (\d{3}):`)
	connFailureText = regexp.MustCompile(`connection refused|connection reset|broken pipe|i/o timeout|unexpected EOF`)
)

// ranges reads byte ranges of blobs (objectstore.RangeOpener) through the
// driver's own client (newContainerClient).
type ranges struct {
	container *container.Client
	prefix    string
}

// OpenRange reads n bytes of the blob at p from off with a ranged Get Blob,
// with If-Match: version when version is set.
func (r *ranges) OpenRange(ctx context.Context, p string, off, n int64, version string) (io.ReadCloser, objectstore.Object, error) {
	opts := &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: n}}
	if version != "" {
		etag := azcore.ETag(version)
		opts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag}}
	}
	resp, err := r.container.NewBlobClient(blobName(r.prefix, p)).DownloadStream(ctx, opts)
	if err != nil {
		var re *azcore.ResponseError
		code := 0
		if errors.As(err, &re) {
			code = re.StatusCode
		}
		return nil, objectstore.Object{}, objectstore.RangeError(p, DriverName, version, code, err)
	}
	var contentRange, etag string
	var length int64
	if resp.ContentRange != nil {
		contentRange = *resp.ContentRange
	}
	if resp.ContentLength != nil {
		length = *resp.ContentLength
	}
	if resp.ETag != nil {
		etag = string(*resp.ETag)
	}
	obj, err := objectstore.ObjectFromContentRange(off, contentRange, length, etag)
	if err != nil {
		resp.Body.Close()
		return nil, objectstore.Object{}, err
	}
	return resp.Body, obj, nil
}
