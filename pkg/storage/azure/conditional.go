package azure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore"
)

// conditional makes Azure Blob's conditional writes
// (storage.ConditionalWriter): Put Blob with If-None-Match: * creates a
// blob only if there is none, and with If-Match: <ETag> replaces it only if
// it is still that version; the service answers 409 BlobAlreadyExists or 412
// ConditionNotMet otherwise. It calls through the driver's own client
// (newContainerClient).
type conditional struct {
	container *container.Client
	prefix    string
	// errs maps errors as the driver's own calls map them.
	errs *objectstore.Driver
}

// newContainerClient returns the client of Shoal's own calls (the
// conditional and the staged writes) for cfg's container, with the
// credentials the reference driver takes (New): the reference driver keeps
// its client to itself. cfg has its defaults applied.
func newContainerClient(cfg Config) (*container.Client, error) {
	serviceURL := strings.TrimRight(cfg.Endpoint, "/")
	if serviceURL == "" {
		serviceURL = fmt.Sprintf("https://%s.blob.core.windows.net", cfg.Account)
	}
	containerURL := serviceURL + "/" + cfg.Container
	if key := os.Getenv("AZURE_STORAGE_KEY"); key != "" {
		cred, err := container.NewSharedKeyCredential(cfg.Account, key)
		if err != nil {
			return nil, fmt.Errorf("AZURE_STORAGE_KEY: %w", err)
		}
		return container.NewClientWithSharedKeyCredential(containerURL, cred, nil)
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("azure credentials: %w", err)
	}
	return container.NewClient(containerURL, cred, nil)
}

// blob is the client of path p's blob, named as the reference driver names
// it.
func (c *conditional) blob(p string) *blockblob.Client {
	return c.container.NewBlockBlobClient(blobName(c.prefix, p))
}

// GetContentVersion reads the blob at p and its ETag.
func (c *conditional) GetContentVersion(ctx context.Context, p string) ([]byte, string, error) {
	if err := objectstore.CheckPath(p, DriverName); err != nil {
		return nil, "", err
	}
	resp, err := c.blob(p).DownloadStream(ctx, nil)
	if status(err) == http.StatusNotFound {
		return nil, "", storage.PathNotFoundError{Path: p, DriverName: DriverName}
	}
	if err != nil {
		return nil, "", c.errs.MapError("get", p, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", c.errs.MapError("get", p, err)
	}
	return b, string(*resp.ETag), nil
}

// PutContentIf writes the block blob at p in one Put Blob, on condition
// that it has ETag ifVersion, or with ifVersion "" that there is none.
func (c *conditional) PutContentIf(ctx context.Context, p string, content []byte, ifVersion string) (string, error) {
	if err := objectstore.CheckPath(p, DriverName); err != nil {
		return "", err
	}
	cond := &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}
	if ifVersion != "" {
		cond = &blob.ModifiedAccessConditions{IfMatch: to.Ptr(azcore.ETag(ifVersion))}
	}
	resp, err := c.blob(p).Upload(ctx, streaming.NopCloser(bytes.NewReader(content)), &blockblob.UploadOptions{
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: cond},
	})
	switch s := status(err); {
	case err == nil:
		return string(*resp.ETag), nil
	case s == http.StatusPreconditionFailed, s == http.StatusConflict, s == http.StatusNotFound && ifVersion != "":
		return "", fmt.Errorf("azure put %s: %w (%w)", p, storage.ErrConditionFailed, err)
	default:
		return "", c.errs.MapError("put", p, err)
	}
}

// status is the HTTP status of an Azure answer, 0 without one.
func status(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}
