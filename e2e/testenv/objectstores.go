package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// The object store servers the storage drivers are tested against: real
// implementations of each store's API, run from this machine's caches.
const (
	// VersityGW is Versity's S3 gateway (Apache-2.0), serving the S3 API
	// over a POSIX directory.
	VersityGW = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"
	// Azurite is Microsoft's Azure Storage emulator, an npm package.
	Azurite = "azurite@3.37.0"
)

// FakeGCSServer serves the GCS JSON API over a directory: fake-gcs-server
// with resumable uploads streamed to disk (the patch's header and
// docs/storage.md say what changes and why). Released, it keeps an upload
// in memory and recomputes its checksums over all of it at every chunk, so
// a 5 GiB upload cannot finish.
var FakeGCSServer = PatchedTool{
	Module:  "github.com/fsouza/fake-gcs-server",
	Version: "v1.56.1",
	Package: ".",
	Patches: []string{"e2e/testenv/patches/fake-gcs-server-stream-uploads.patch"},
}

// Azurite's well-known development account (the same in every Azurite, and
// published in its documentation): not a secret.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// The S3 gateway's root account, as test credentials.
const (
	versityAccessKey = "shoal-test"
	versitySecretKey = "shoal-test-secret"
)

// Object store kinds, the schemes of their storage URLs.
const (
	KindS3    = "s3"
	KindAzure = "azure"
	KindGCS   = "gs"
)

// ErrToolUnavailable marks a failure to install a test tool (no npm, no
// registry), which tests report as a missing dependency (Unavailable)
// rather than as a failure of the code under test.
var ErrToolUnavailable = errors.New("test tool unavailable")

// ObjectStore is a started object store server holding one empty bucket
// (a container, on Azure).
type ObjectStore struct {
	*Server
	// Kind is KindS3, KindAzure or KindGCS.
	Kind string
	// Bucket is the bucket or container created for the test.
	Bucket string
	// Env holds the KEY=VALUE credentials a client of the store needs,
	// for a child process's environment (OriginOptions.Env) or
	// os.Setenv: Shoal's drivers take credentials only from there.
	Env []string
}

// Endpoint is the URL the store's clients use.
func (o *ObjectStore) Endpoint() string {
	if o.Kind == KindAzure {
		return o.URL() + "/" + AzuriteAccount
	}
	return o.URL()
}

// StorageURL is the Shoal storage URL of prefix (a path such as "/shoal",
// or "" for the bucket's root) in the store's bucket.
func (o *ObjectStore) StorageURL(prefix string) string {
	u := url.URL{Scheme: o.Kind, Host: o.Bucket, Path: prefix}
	q := url.Values{"endpoint": {o.Endpoint()}}
	switch o.Kind {
	case KindS3:
		q.Set("region", "us-east-1")
		q.Set("pathStyle", "true")
	case KindAzure:
		q.Set("account", AzuriteAccount)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// ObjectStoreOptions describes an object store server to start.
type ObjectStoreOptions struct {
	// Binary is the server: the versitygw binary (Workspace.Install),
	// the patched fake-gcs-server (Workspace.BuildPatchedTool), or
	// azurite-blob (Workspace.InstallNPM).
	Binary string
	// Dir holds the server's data (Dir/data) and its log.
	Dir string
	// Bucket is the bucket or container to create; default "shoal".
	Bucket string
	// ReadyTimeout bounds the wait for the server; zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

func (o *ObjectStoreOptions) fill(name string) (string, error) {
	if o.Bucket == "" {
		o.Bucket = "shoal"
	}
	data := filepath.Join(o.Dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return "", fmt.Errorf("starting %s: %w", name, err)
	}
	return data, nil
}

// StartVersityGW starts the S3 gateway over a POSIX directory on a free
// 127.0.0.1 port, with the bucket in it.
func StartVersityGW(ctx context.Context, opts ObjectStoreOptions) (*ObjectStore, error) {
	data, err := opts.fill("versitygw")
	if err != nil {
		return nil, err
	}
	// The POSIX backend's buckets are the directories at its top level.
	if err := os.MkdirAll(filepath.Join(data, opts.Bucket), 0o755); err != nil {
		return nil, fmt.Errorf("starting versitygw: creating bucket: %w", err)
	}
	s, err := startServer(ctx, func(addr string) (Options, error) {
		return Options{
			Name: "versitygw " + addr,
			Path: opts.Binary,
			Args: []string{"--access", versityAccessKey, "--secret", versitySecretKey,
				"--port", addr, "--quiet", "posix", data},
			LogPath:      filepath.Join(opts.Dir, "versitygw.log"),
			Ready:        httpAnswers("http://" + addr + "/"),
			ReadyTimeout: opts.ReadyTimeout,
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return &ObjectStore{Server: s, Kind: KindS3, Bucket: opts.Bucket, Env: []string{
		"AWS_ACCESS_KEY_ID=" + versityAccessKey,
		"AWS_SECRET_ACCESS_KEY=" + versitySecretKey,
	}}, nil
}

// StartFakeGCS starts fake-gcs-server with its filesystem backend on a free
// 127.0.0.1 port, plain HTTP, and creates the bucket. The patched server
// keeps unfinished resumable uploads under Dir/uploads.
func StartFakeGCS(ctx context.Context, opts ObjectStoreOptions) (*ObjectStore, error) {
	data, err := opts.fill("fake-gcs-server")
	if err != nil {
		return nil, err
	}
	uploads := filepath.Join(opts.Dir, "uploads")
	if err := os.MkdirAll(uploads, 0o755); err != nil {
		return nil, fmt.Errorf("starting fake-gcs-server: %w", err)
	}
	s, err := startServer(ctx, func(addr string) (Options, error) {
		_, port, _ := strings.Cut(addr, ":")
		return Options{
			Name: "fake-gcs-server " + addr,
			Env:  []string{"TMPDIR=" + uploads},
			Path: opts.Binary,
			Args: []string{"-scheme", "http", "-host", "127.0.0.1", "-port", port,
				"-backend", "filesystem", "-filesystem-root", data,
				"-public-host", addr, "-external-url", "http://" + addr, "-log-level", "warn"},
			LogPath:      filepath.Join(opts.Dir, "fake-gcs-server.log"),
			Ready:        HTTPReady("http://" + addr + "/storage/v1/b"),
			ReadyTimeout: opts.ReadyTimeout,
		}, nil
	})
	if err != nil {
		return nil, err
	}
	o := &ObjectStore{Server: s, Kind: KindGCS, Bucket: opts.Bucket}
	body := fmt.Sprintf(`{"name":%q}`, opts.Bucket)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL()+"/storage/v1/b?project=shoal-test", strings.NewReader(body))
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
		err = expectStatus(http.DefaultClient.Do(req))
	}
	if err != nil {
		_ = s.Stop(DefaultStopTimeout)
		return nil, fmt.Errorf("starting fake-gcs-server: creating bucket %s: %w", opts.Bucket, err)
	}
	return o, nil
}

// StartAzurite starts Azurite's blob service on a free 127.0.0.1 port, with
// its data under Dir, and creates the container.
func StartAzurite(ctx context.Context, opts ObjectStoreOptions) (*ObjectStore, error) {
	data, err := opts.fill("azurite")
	if err != nil {
		return nil, err
	}
	if opts.ReadyTimeout == 0 {
		// Node loads Azurite's few thousand modules in 10 s or more
		// on two busy cores.
		opts.ReadyTimeout = 2 * DefaultReadyTimeout
	}
	s, err := startServer(ctx, func(addr string) (Options, error) {
		_, port, _ := strings.Cut(addr, ":")
		return Options{
			Name: "azurite-blob " + addr,
			Path: opts.Binary,
			// --skipApiVersionCheck: the SDK may be newer than the
			// emulator's newest service version.
			Args: []string{"--blobHost", "127.0.0.1", "--blobPort", port,
				"--location", data, "--skipApiVersionCheck", "--disableTelemetry"},
			LogPath:      filepath.Join(opts.Dir, "azurite.log"),
			Ready:        httpAnswers("http://" + addr + "/" + AzuriteAccount + "?comp=list"),
			ReadyTimeout: opts.ReadyTimeout,
		}, nil
	})
	if err != nil {
		return nil, err
	}
	o := &ObjectStore{Server: s, Kind: KindAzure, Bucket: opts.Bucket, Env: []string{"AZURE_STORAGE_KEY=" + AzuriteKey}}
	if err := createContainer(ctx, o.Endpoint(), opts.Bucket); err != nil {
		_ = s.Stop(DefaultStopTimeout)
		return nil, fmt.Errorf("starting azurite: %w", err)
	}
	return o, nil
}

func createContainer(ctx context.Context, endpoint, name string) error {
	cred, err := azblob.NewSharedKeyCredential(AzuriteAccount, AzuriteKey)
	if err != nil {
		return err
	}
	c, err := azblob.NewClientWithSharedKeyCredential(endpoint, cred, nil)
	if err != nil {
		return err
	}
	if _, err := c.CreateContainer(ctx, name, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("creating container %s: %w", name, err)
	}
	return nil
}

// httpAnswers returns a readiness probe that wants any HTTP answer from GET
// url: the stores answer an unsigned request with 403.
func httpAnswers(url string) func(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
}

func expectStatus(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return fmt.Errorf("%s %s: %s: %s", resp.Request.Method, resp.Request.URL, resp.Status, strings.TrimSpace(b.String()))
	}
	return nil
}

// InstallNPM installs an npm package given as "name@version" into its own
// directory under <Cache>/tools and returns the path of its command bin (a
// script in node_modules/.bin). A package already installed at that version
// is reused.
func (w *Workspace) InstallNPM(ctx context.Context, pkg, bin string) (string, error) {
	if _, version, ok := strings.Cut(pkg, "@"); !ok || version == "" {
		return "", fmt.Errorf("installing %s: want name@version", pkg)
	}
	dir := filepath.Join(w.Cache, "tools", "npm_"+strings.NewReplacer("/", "_", "@", "_").Replace(pkg))
	path := filepath.Join(dir, "node_modules", ".bin", bin)
	unlock, err := w.lock("tool-" + filepath.Base(dir))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("installing %s: npm is needed (.ci/run installs Debian's nodejs and npm): %w", pkg, err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("installing %s: %w", pkg, err)
	}
	// Install into a scratch directory and rename, so that an interrupted
	// install never looks installed. .bin's links are relative, so they
	// survive the rename.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".install-")
	if err != nil {
		return "", fmt.Errorf("installing %s: %w", pkg, err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, npm, "install", "--prefix", tmp, "--no-audit", "--no-fund", "--no-save", "--loglevel=error", pkg)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("installing %s (needs the npm registry): %s: %w\n%s", pkg, cmd, err, strings.TrimSpace(out.String()))
	}
	if _, err := os.Stat(filepath.Join(tmp, "node_modules", ".bin", bin)); err != nil {
		return "", fmt.Errorf("installing %s: no command %s in the package: %w", pkg, bin, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("installing %s: %w", pkg, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("installing %s: %w", pkg, err)
	}
	return path, nil
}

// StartObjectStore installs (or reuses) the server for kind and starts it
// with a bucket under dir.
func (w *Workspace) StartObjectStore(ctx context.Context, kind, dir string) (*ObjectStore, error) {
	opts := ObjectStoreOptions{Dir: dir}
	var err error
	switch kind {
	case KindS3:
		if opts.Binary, err = w.Install(ctx, VersityGW); err == nil {
			return StartVersityGW(ctx, opts)
		}
	case KindAzure:
		if opts.Binary, err = w.InstallNPM(ctx, Azurite, "azurite-blob"); err == nil {
			return StartAzurite(ctx, opts)
		}
	case KindGCS:
		if opts.Binary, err = w.BuildPatchedTool(ctx, FakeGCSServer); err == nil {
			return StartFakeGCS(ctx, opts)
		}
	default:
		return nil, fmt.Errorf("starting object store: unknown kind %q; want %s, %s or %s", kind, KindS3, KindAzure, KindGCS)
	}
	return nil, errors.Join(ErrToolUnavailable, err)
}
