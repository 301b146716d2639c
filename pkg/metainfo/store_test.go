package metainfo

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/storage"
)

func TestStoragePath(t *testing.T) {
	tests := []struct {
		d    digest.Digest
		want string
	}{
		{digest.FromString("a"), "/shoal/v1/metainfo/sha256/" + digest.FromString("a").Encoded()},
		{digest.SHA512.FromString("a"), "/shoal/v1/metainfo/sha512/" + digest.SHA512.FromString("a").Encoded()},
	}
	for _, tt := range tests {
		got := StoragePath(tt.d)
		if got != tt.want {
			t.Errorf("StoragePath(%s) = %q, want %q", tt.d, got, tt.want)
		}
		if !storage.PathRegexp.MatchString(got) {
			t.Errorf("StoragePath(%s) = %q is not a valid storage path", tt.d, got)
		}
	}
}

func TestStoreLoad(t *testing.T) {
	ctx := context.Background()
	drv := inmemory.New()
	m := sample(t, 100, 16)

	_, err := Load(ctx, drv, m.Digest)
	var notFound storage.PathNotFoundError
	if !errors.As(err, &notFound) {
		t.Fatalf("Load before Store: error %v, want a PathNotFoundError", err)
	}
	if err := Store(ctx, drv, m); err != nil {
		t.Fatalf("Store: %v", err)
	}
	got, err := Load(ctx, drv, m.Digest)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("Load returned %+v, want %+v", *got, *m)
	}

	// A file stored under the wrong name must not be taken for the blob's.
	other := digest.FromString("other")
	b, _ := m.MarshalBinary()
	if err := drv.PutContent(ctx, StoragePath(other), b); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ctx, drv, other); err == nil {
		t.Fatal("Load accepted metainfo describing another blob")
	}
}
