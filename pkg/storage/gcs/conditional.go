package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	shoalstorage "github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore"
)

// conditional makes GCS's conditional writes (storage.ConditionalWriter) on
// the driver's bucket: an upload with the precondition DoesNotExist
// (ifGenerationMatch=0) creates an object only if there is none, and with
// GenerationMatch replaces it only if it is still that generation; the
// service answers 412 otherwise. The version is the object's generation.
type conditional struct {
	d *driver
	// errs maps errors as the driver's own calls map them.
	errs *objectstore.Driver
}

// GetContentVersion reads the object at p and its generation.
func (c *conditional) GetContentVersion(ctx context.Context, p string) ([]byte, string, error) {
	if err := check(p); err != nil {
		return nil, "", err
	}
	r, err := c.d.bucket.Object(c.d.key(p)).NewReader(ctx)
	if notFound(err) {
		return nil, "", shoalstorage.PathNotFoundError{Path: p, DriverName: DriverName}
	}
	if err != nil {
		return nil, "", c.errs.MapError("get", p, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, "", c.errs.MapError("get", p, err)
	}
	return b, strconv.FormatInt(r.Attrs.Generation, 10), nil
}

// PutContentIf uploads the object at p in one request, on condition that it
// is generation ifVersion, or with ifVersion "" that there is none.
func (c *conditional) PutContentIf(ctx context.Context, p string, content []byte, ifVersion string) (string, error) {
	if err := check(p); err != nil {
		return "", err
	}
	cond := storage.Conditions{DoesNotExist: true}
	if ifVersion != "" {
		gen, err := strconv.ParseInt(ifVersion, 10, 64)
		if err != nil || gen <= 0 {
			return "", fmt.Errorf("gcs put %s: version %q is not a generation: %w", p, ifVersion, shoalstorage.ErrConditionFailed)
		}
		cond = storage.Conditions{GenerationMatch: gen}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // before Close, abandons the upload
	w := c.d.bucket.Object(c.d.key(p)).If(cond).NewWriter(ctx)
	w.ContentType = contentType
	w.ChunkSize = 0 // one request, no resumable session
	_, err := w.Write(content)
	if err == nil {
		err = w.Close()
	}
	var gerr *googleapi.Error
	switch {
	case err == nil:
		return strconv.FormatInt(w.Attrs().Generation, 10), nil
	case errors.As(err, &gerr) && gerr.Code == http.StatusPreconditionFailed:
		return "", fmt.Errorf("gcs put %s: %w (%w)", p, shoalstorage.ErrConditionFailed, err)
	default:
		return "", c.errs.MapError("put", p, err)
	}
}
