package auth

import (
	"context"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

func TestLoadOrCreateKeyCreatesOnceAndSharesIt(t *testing.T) {
	ctx := context.Background()
	d := inmemory.New()
	first, err := LoadOrCreateKey(ctx, d, 0)
	if err != nil {
		t.Fatalf("first start on empty storage: %v", err)
	}
	second, err := LoadOrCreateKey(ctx, d, 0)
	if err != nil {
		t.Fatalf("second node: %v", err)
	}
	if first.ID() != second.ID() {
		t.Fatalf("the second node got key %s, want the stored %s", second.ID(), first.ID())
	}
}
