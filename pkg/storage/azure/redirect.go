package azure

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// plainHTTPRedirects is the reference driver with RedirectURL signing for
// a plain-HTTP endpoint (Azurite). The reference driver signs every URL
// for HTTPS only (spr=https), which a store on HTTP rightly refuses
// (Azurite: 403 AuthorizationProtocolMismatch), and it finds the container
// by parsing the blob's URL, which takes the account for the container
// when the account is in the path and the host is a name such as
// "localhost". Here the SAS allows HTTP too and names the container
// itself. On https:// endpoints (Azure) the reference driver signs.
type plainHTTPRedirects struct {
	storagedriver.StorageDriver
	cred      *azblob.SharedKeyCredential
	endpoint  string // no trailing "/"
	container string
	prefix    string
}

// newPlainHTTPRedirects wraps d, the reference driver for cfg, whose
// endpoint is plain HTTP. It needs the account key: Azurite has no other
// way to sign.
func newPlainHTTPRedirects(d storagedriver.StorageDriver, cfg Config, key string) (*plainHTTPRedirects, error) {
	if key == "" {
		return nil, errors.New("redirect=true on a plain-HTTP endpoint needs the account key to sign URLs with: set AZURE_STORAGE_KEY")
	}
	cred, err := azblob.NewSharedKeyCredential(cfg.Account, key)
	if err != nil {
		return nil, fmt.Errorf("account key: %w", err)
	}
	return &plainHTTPRedirects{StorageDriver: d, cred: cred, endpoint: strings.TrimRight(cfg.Endpoint, "/"),
		container: cfg.Container, prefix: cfg.Prefix}, nil
}

// RedirectURL returns p's blob URL with a read-only service SAS valid for
// 20 minutes (the reference driver's duration), for HTTP or HTTPS.
func (d *plainHTTPRedirects) RedirectURL(r *http.Request, p string) (string, error) {
	if r.Method != http.MethodGet {
		return "", nil
	}
	name := blobName(d.prefix, p)
	now := time.Now().UTC()
	q, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		StartTime:     now.Add(-10 * time.Second), // clock skew, as the reference driver allows
		ExpiryTime:    now.Add(20 * time.Minute),
		Permissions:   (&sas.BlobPermissions{Read: true}).String(),
		ContainerName: d.container,
		BlobName:      name,
	}.SignWithSharedKey(d.cred)
	if err != nil {
		return "", fmt.Errorf("signing a URL for %s: %w", p, err)
	}
	u := d.endpoint + "/" + url.PathEscape(d.container) + "/" + (&url.URL{Path: name}).EscapedPath()
	return u + "?" + q.Encode(), nil
}
