package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// registryStoreConfig is registryConfig (registry.go) with the storage
// section of an object store. Redirects are off: the tests read blobs
// through the registry, as through the origin.
const registryStoreConfig = `version: 0.1
log:
  level: info
  formatter: text
storage:
%s
  delete:
    enabled: true
  redirect:
    disable: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
  secret: shoal-e2e-not-a-secret
`

// registryStorage is the storage section registry:2 needs for prefix in
// o's bucket: the same keys the origin uses with o.StorageURL(prefix).
func registryStorage(o *ObjectStore, prefix string) (section string, env []string, err error) {
	switch o.Kind {
	case KindS3:
		return fmt.Sprintf(`  s3:
    region: us-east-1
    regionendpoint: %q
    forcepathstyle: true
    secure: false
    bucket: %q
    rootdirectory: %q`, o.Endpoint(), o.Bucket, prefix), o.Env, nil
	case KindAzure:
		// registry:2 reads its account key from its config; the
		// environment variable keeps it out of the file.
		return fmt.Sprintf(`  azure:
    accountname: %q
    container: %q
    rootdirectory: %q
    serviceurl: %q
    credentials:
      type: shared_key`, AzuriteAccount, o.Bucket, prefix, o.Endpoint()),
			append(o.Env, "REGISTRY_STORAGE_AZURE_ACCOUNTKEY="+AzuriteKey), nil
	}
	return "", nil, fmt.Errorf("registry:2 on a %s store: not supported by these tests", o.Kind)
}

// StartRegistryOnStore starts registry:2 (binary: ReferenceRegistry) on
// prefix in o's bucket, on a free port, with its config and log in dir.
func StartRegistryOnStore(ctx context.Context, binary string, o *ObjectStore, prefix, dir string) (*Server, error) {
	section, env, err := registryStorage(o, prefix)
	if err != nil {
		return nil, err
	}
	return startServer(ctx, func(addr string) (Options, error) {
		config := filepath.Join(dir, "registry.yml")
		if err := os.WriteFile(config, fmt.Appendf(nil, registryStoreConfig, section, addr), 0o644); err != nil {
			return Options{}, fmt.Errorf("writing registry config: %w", err)
		}
		return Options{
			Name:    "registry " + addr,
			Path:    binary,
			Args:    []string{"serve", config},
			Env:     env,
			LogPath: filepath.Join(dir, "registry.log"),
			Ready:   HTTPReady("http://" + addr + "/v2/"),
		}, nil
	})
}

// RegistryOnStore starts registry:2 on prefix in o's bucket for a test and
// stops it when the test ends.
func RegistryOnStore(t testing.TB, o *ObjectStore, prefix string) *Server {
	t.Helper()
	bin := Tool(t, ReferenceRegistry)
	s, err := StartRegistryOnStore(t.Context(), bin, o, prefix, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, s.Process, false)
	return s
}
