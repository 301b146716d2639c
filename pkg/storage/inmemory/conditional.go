package inmemory

import (
	"context"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/pkg/storage"
)

var _ storage.ConditionalWriter = (*Driver)(nil)

// GetContentVersion reads the file at p and its version (a hash of its
// content).
func (d *Driver) GetContentVersion(ctx context.Context, p string) ([]byte, string, error) {
	b, err := d.GetContent(ctx, p)
	if err != nil {
		return nil, "", err
	}
	return b, storage.ContentVersion(b), nil
}

// PutContentIf replaces the file at p if its version is still ifVersion, or
// creates it if ifVersion is "" and there is no file at p. The check and the
// write happen under the driver's lock, so they are one step.
func (d *Driver) PutContentIf(_ context.Context, p string, data []byte, ifVersion string) (string, error) {
	if err := checkPath(p, false); err != nil {
		return "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.lookup(p)
	switch {
	case cur != nil && cur.isDir:
		return "", fmt.Errorf("%s: writing %s: is a directory", driverName, p)
	case cur == nil && ifVersion != "":
		return "", fmt.Errorf("%s: replacing %s: it is gone: %w", driverName, p, storage.ErrConditionFailed)
	case cur != nil && ifVersion == "":
		return "", fmt.Errorf("%s: creating %s: it exists: %w", driverName, p, storage.ErrConditionFailed)
	case cur != nil && storage.ContentVersion(cur.data.bytes()) != ifVersion:
		return "", fmt.Errorf("%s: replacing %s: it was written since version %s: %w", driverName, p, ifVersion, storage.ErrConditionFailed)
	}
	f, err := d.mkfile(p)
	if err != nil {
		return "", err
	}
	f.data = contentOf(data)
	f.mod = time.Now()
	return storage.ContentVersion(data), nil
}
